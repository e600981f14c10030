//! With the feature `emulator`, compiles kernels/*.cu for the host (emu/emulator.cpp includes
//! them behind emu/cuda_shim.h). Without it, does nothing: the GPU path compiles the kernels
//! with NVRTC at run time.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "emulator")]
    {
        for f in ["emu/emulator.cpp", "emu/cuda_shim.h"] {
            println!("cargo:rerun-if-changed={f}");
        }
        if let Ok(dir) = std::fs::read_dir("../../kernels") {
            for e in dir.flatten() {
                println!("cargo:rerun-if-changed={}", e.path().display());
            }
        }
        cc::Build::new()
            .cpp(true)
            .std("c++17")
            .file("emu/emulator.cpp")
            // Optimised even in debug builds: the emulator runs every thread of every block.
            .opt_level(2)
            .debug(false)
            .flag_if_supported("-Wno-unknown-pragmas")
            .flag_if_supported("-Wno-unused-parameter")
            .compile("fastquery_cuda_emulator");
    }
}
