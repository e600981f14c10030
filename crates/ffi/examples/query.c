/*
 * A private embedding query from C, both parties in one process (a 2PC framework would carry
 * the bytes between its parties): a random 512 x 64 table, three random token ids, and the
 * check that the two parties' shares add up to the rows, dequantized, close to the table's.
 *
 *   cc -I crates/ffi/include crates/ffi/examples/query.c -L target/release -lfastquery_ffi \
 *      -Wl,-rpath,target/release -lm -o query && ./query fastquery
 *
 * Exit status 0 when every share checks out; otherwise the failing step on stderr.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fastquery.h"

#define ROWS 512
#define COLS 64
#define TOKENS 3

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t next_u64(void) {
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1du;
}

static double uniform(void) { return ((next_u64() >> 11) + 0.5) / 9007199254740992.0; }

static int fail(const char *step, int code) {
    fprintf(stderr, "%s: error %d: %s\n", step, code, fq_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *scheme = argc > 1 ? argv[1] : "fastquery";
    static float table[ROWS * COLS];
    for (size_t i = 0; i < ROWS * COLS; i++) {
        /* Box-Muller: a Gaussian table of embedding-like scale. */
        table[i] = (float)(0.02 * sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform()));
    }

    /* The server party. */
    FqServer *server = NULL;
    int rc = fq_server_new(scheme, "cpu", table, ROWS, COLS, TOKENS, 0, &server);
    if (rc != FQ_OK) return fail("fq_server_new", rc);
    FqBytes hello = {NULL, 0};
    if ((rc = fq_server_hello(server, &hello)) != FQ_OK) return fail("fq_server_hello", rc);

    /* The client party, from the hello alone. */
    FqClient *client = NULL;
    if ((rc = fq_client_new(hello.data, hello.len, &client)) != FQ_OK) return fail("fq_client_new", rc);
    size_t m = 0, d = 0, max_tokens = 0;
    uint32_t bits = 0;
    if ((rc = fq_client_shape(client, &m, &d, &bits, &max_tokens)) != FQ_OK) return fail("fq_client_shape", rc);
    if (m != ROWS || d != COLS || max_tokens != TOKENS || bits < 2 || bits > 64) {
        fprintf(stderr, "shape %zu x %zu, %u bits, %zu tokens\n", m, d, bits, max_tokens);
        return 1;
    }

    FqBytes setup = {NULL, 0};
    uint64_t session = 0;
    if ((rc = fq_client_setup(client, &setup)) != FQ_OK) return fail("fq_client_setup", rc);
    if ((rc = fq_server_open_session(server, setup.data, setup.len, &session)) != FQ_OK)
        return fail("fq_server_open_session", rc);

    uint32_t ids[TOKENS];
    for (size_t t = 0; t < TOKENS; t++) ids[t] = (uint32_t)(next_u64() % ROWS);
    FqBytes query = {NULL, 0}, response = {NULL, 0};
    FqShares theirs = {NULL, 0, 0, 0}, mine = {NULL, 0, 0, 0};
    if ((rc = fq_client_query(client, ids, TOKENS, &query)) != FQ_OK) return fail("fq_client_query", rc);
    if ((rc = fq_server_answer(server, session, query.data, query.len, &response, &theirs)) != FQ_OK)
        return fail("fq_server_answer", rc);
    if ((rc = fq_client_decode(client, response.data, response.len, &mine)) != FQ_OK)
        return fail("fq_client_decode", rc);
    if (mine.tokens != TOKENS || theirs.tokens != TOKENS || mine.d != COLS || theirs.d != COLS ||
        mine.plain_bits != bits || theirs.plain_bits != bits) {
        fprintf(stderr, "shares of the wrong shape\n");
        return 1;
    }

    /* Reconstruct (the 2PC framework never does this in the clear) and dequantize. */
    static float scale[COLS];
    static int32_t zero[COLS];
    if ((rc = fq_server_scales(server, scale, zero, COLS)) != FQ_OK) return fail("fq_server_scales", rc);
    uint64_t mask = bits == 64 ? ~(uint64_t)0 : (((uint64_t)1 << bits) - 1);
    double err = 0, norm = 0;
    for (size_t t = 0; t < TOKENS; t++) {
        for (size_t c = 0; c < COLS; c++) {
            uint64_t q = (mine.values[t * COLS + c] + theirs.values[t * COLS + c]) & mask;
            /* Signed mod 2^bits. */
            int64_t s = (bits < 64 && q >> (bits - 1)) ? (int64_t)(q | ~mask) : (int64_t)q;
            double got = scale[c] * (double)(s - zero[c]);
            double want = table[ids[t] * COLS + c];
            err += (got - want) * (got - want);
            norm += want * want;
        }
    }
    double rel = sqrt(err / norm);
    printf("%s: %d tokens, query %zu bytes, response %zu bytes, relative error %.4f\n", scheme, TOKENS, query.len,
           response.len, rel);

    fq_bytes_free(&hello);
    fq_bytes_free(&setup);
    fq_bytes_free(&query);
    fq_bytes_free(&response);
    fq_shares_free(&mine);
    fq_shares_free(&theirs);
    fq_server_close_session(server, session);
    fq_client_free(client);
    fq_server_free(server);
    /* Quantization error: about 0.1 of the rows' norm at 4 bits, far less in fixed point; wrong
     * rows or shares that do not add up give 1.4 or more. */
    if (!(rel < 0.25)) {
        fprintf(stderr, "the shares do not add up to the rows (relative error %.4f)\n", rel);
        return 1;
    }
    return 0;
}
