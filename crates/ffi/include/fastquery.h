/*
 * FastQuery's C interface: private embedding-table queries for two-party private LLM
 * inference, for 2PC frameworks in C or C++. The client party's token ids stay hidden from the
 * server party, the server's table from the client, and each ends with additive shares (mod
 * 2^plain_bits) of the quantized rows. The channel between the parties is the caller's: every
 * step is bytes in, bytes out.
 *
 *   server: fq_server_new -> fq_server_hello ------------------> client: fq_client_new
 *   server: fq_server_open_session <------------- setup ------- client: fq_client_setup
 *   server: fq_server_answer (its shares) <------- query ------- client: fq_client_query
 *                               -------------- response -------> client: fq_client_decode (its shares)
 *
 * Every function returns FQ_OK or an error code; fq_last_error() has the text (per thread).
 * Nothing unwinds into C. Bytes and shares the library returns are the caller's to free
 * (fq_bytes_free, fq_shares_free: shares are zeroed first). A server may be used from several
 * threads at once; a client by one thread at a time, and it carries one query at a time: the
 * next query waits for this one's response to decode (a response refused as malformed leaves
 * the query pending, so the genuine one still decodes).
 *
 * Link: -lfastquery_ffi (crates/ffi: libfastquery_ffi.so, or libfastquery_ffi.a with
 * -lpthread -ldl -lm). Built by `cargo build --release -p fastquery-ffi`.
 */
#ifndef FASTQUERY_H
#define FASTQUERY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FQ_OK 0
/* A null pointer, a length that does not fit, an unknown scheme or backend. */
#define FQ_ERR_ARGUMENT 1
/* The other party's bytes or the order of calls were refused (malformed or foreign message,
 * unknown session, too many tokens, a token id out of range). */
#define FQ_ERR_PROTOCOL 2
/* The computation failed (backend error, out of memory) or panicked. */
#define FQ_ERR_INTERNAL 3

typedef struct FqServer FqServer;
typedef struct FqClient FqClient;

/* Bytes the library returns. */
typedef struct FqBytes {
    uint8_t *data;
    size_t len;
} FqBytes;

/* A party's shares: tokens x d values mod 2^plain_bits, row-major. */
typedef struct FqShares {
    uint64_t *values;
    size_t tokens;
    size_t d;
    uint32_t plain_bits;
} FqShares;

/* The text of this thread's last failed call ("" after a success); valid until the next call. */
const char *fq_last_error(void);

void fq_bytes_free(FqBytes *bytes);
void fq_shares_free(FqShares *shares);

/* The server party: `table` (rows x cols floats, row-major) encoded as `scheme` queries it
 * ("fastquery", "fastquery-wan", "fastquery-lan", "cheetah", "iron", "bumblebee") and
 * preprocessed on `backend` ("cpu"; "cuda" where built with the feature cuda), for queries of
 * at most `tokens` tokens; `threads` bounds the CPU backend (0: every core). */
int fq_server_new(const char *scheme, const char *backend, const float *table, size_t rows, size_t cols,
                  size_t tokens, size_t threads, FqServer **server);
void fq_server_free(FqServer *server);
/* The public design inputs for the client party (the bytes `fastquery serve` sends). */
int fq_server_hello(const FqServer *server, FqBytes *hello);
/* Public dequantization, d channels: real ~ scale[c] * (Q - zero[c]), Q the rows the shares add
 * up to, read as signed values mod 2^plain_bits. */
int fq_server_scales(const FqServer *server, float *scale, int32_t *zero, size_t d);
int fq_server_open_session(const FqServer *server, const uint8_t *setup, size_t len, uint64_t *session);
void fq_server_close_session(const FqServer *server, uint64_t session);
int fq_server_answer(const FqServer *server, uint64_t session, const uint8_t *query, size_t len,
                     FqBytes *response, FqShares *shares);

/* The client party, from the server's hello: the same design, a fresh secret key. */
int fq_client_new(const uint8_t *hello, size_t len, FqClient **client);
void fq_client_free(FqClient *client);
/* Any output may be NULL. */
int fq_client_shape(const FqClient *client, size_t *m, size_t *d, uint32_t *plain_bits, size_t *max_tokens);
int fq_client_setup(FqClient *client, FqBytes *setup);
int fq_client_query(FqClient *client, const uint32_t *ids, size_t count, FqBytes *query);
int fq_client_decode(FqClient *client, const uint8_t *response, size_t len, FqShares *shares);

#ifdef __cplusplus
}
#endif

#endif /* FASTQUERY_H */
