#!/usr/bin/env python3
"""The machine code of one kernel without a GPU: its instruction mix, whole and per loop.

    python3 scripts/sass.py mac_ntt_mma_u32 [sm_90]
    NVRTC_OPTS=-DFQ_SELECT_REDUCE python3 scripts/sass.py ntt_forward_4096_u32   (extra NVRTC options)

Compiles kernels/*.cu (in the order of SOURCES in crates/cuda/src/lib.rs) with NVRTC to a cubin
for the architecture, disassembles it with cuobjdump, and prints for the kernel: the count of
each opcode, and for every backward branch (a loop) its length in instructions and its opcode
mix. NVRTC comes from scripts/setup.sh; cuobjdump and nvdisasm from PyPI (nvidia-cuda-cuobjdump,
nvidia-cuda-nvdisasm, fetched once into .cache/cudatools). This is how the inner loop of the tensor-core product was counted for
docs/BENCHMARKS.md; it says nothing about speed on its own.
"""
import collections
import ctypes
import glob
import os
import re
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, ".cache", "cudatools")


def sources():
    lib_rs = open(os.path.join(ROOT, "crates", "cuda", "src", "lib.rs")).read()
    names = re.findall(r'\("([a-z_]+\.cuh?)", include_str!', lib_rs)
    return "".join(open(os.path.join(ROOT, "kernels", n)).read() + "\n" for n in names)


def cubin(arch):
    lib_dir = subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup.sh")], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
    os.environ["LD_LIBRARY_PATH"] = lib_dir + ":" + os.environ.get("LD_LIBRARY_PATH", "")
    # Preload the builtins next to libnvrtc (LD_LIBRARY_PATH is read at process start).
    for so in sorted(glob.glob(os.path.join(lib_dir, "libnvrtc-builtins.so*"))):
        ctypes.CDLL(so, mode=ctypes.RTLD_GLOBAL)
    nvrtc = ctypes.CDLL(glob.glob(os.path.join(lib_dir, "libnvrtc.so.*"))[0])
    prog = ctypes.c_void_p()
    nvrtc.nvrtcCreateProgram(ctypes.byref(prog), sources().encode(), b"kernels.cu", 0, None, None)
    opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"]
    opts += [o.encode() for o in os.environ.get("NVRTC_OPTS", "").split()]
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    if rc != 0:
        nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(prog, log)
        sys.exit(f"NVRTC failed ({rc}):\n{log.value.decode()}")
    nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(size))
    out = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetCUBIN(prog, out)
    path = os.path.join(TOOLS, f"kernels_{arch}.cubin")
    os.makedirs(TOOLS, exist_ok=True)
    open(path, "wb").write(out.raw)
    return path


def cuobjdump():
    """cuobjdump and the nvdisasm it calls, from PyPI, once."""
    bin_dir = os.path.join(TOOLS, "nvidia", "cu13", "bin")
    for tool in ["cuobjdump", "nvdisasm"]:
        if not os.path.exists(os.path.join(bin_dir, tool)):
            wheel = os.path.join(TOOLS, "wheel")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary=:all:",
                            f"nvidia-cuda-{tool}==13.5.37", "-d", wheel], check=True)
            with zipfile.ZipFile(glob.glob(os.path.join(wheel, f"nvidia_cuda_{tool}-*.whl"))[0]) as z:
                z.extractall(TOOLS)
            os.chmod(os.path.join(bin_dir, tool), 0o755)
    os.environ["PATH"] = bin_dir + ":" + os.environ.get("PATH", "")
    return os.path.join(bin_dir, "cuobjdump")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    kernel, arch = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "sm_90")
    sass = subprocess.run([cuobjdump(), "-sass", cubin(arch)], check=True, capture_output=True, text=True).stdout
    # The kernel's section: from its "Function :" line to the next one.
    sections = re.split(r"\n\s*Function : ", sass)
    body = next((sec for sec in sections[1:] if sec.split("\n", 1)[0].strip() == kernel), "")
    insts = []  # (address, opcode, text)
    for line in body.splitlines():
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);", line)
        if m:
            insts.append((int(m.group(1), 16), m.group(3), m.group(3) + m.group(4)))
    if not insts:
        sys.exit(f"no machine code for {kernel} ({arch})")
    base = lambda op: op.split(".")[0]
    print(f"{kernel} on {arch}: {len(insts)} instructions")
    for op, n in collections.Counter(base(op) for _, op, _ in insts).most_common():
        print(f"  {op:10} {n}")
    for addr, op, text in insts:
        t = re.search(r"BRA\s+(?:`\(\.L_x_\d+\)|0x([0-9a-f]+))", text)
        if base(op) == "BRA" and t and t.group(1) and int(t.group(1), 16) < addr:
            start = int(t.group(1), 16)
            body = [o for a, o, _ in insts if start <= a <= addr]
            mix = collections.Counter(base(o) for o in body).most_common(8)
            print(f"loop 0x{start:x}-0x{addr:x}: {len(body)} instructions: " + ", ".join(f"{o} {n}" for o, n in mix))


if __name__ == "__main__":
    main()
