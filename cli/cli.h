/* cli.h -- subcommands of the radixmesh CLI. Each returns the exit code:
 * 0 success, 1 failure at run time, 2 bad usage. */
#ifndef RM_CLI_H
#define RM_CLI_H

#include "flags.h"

int rm_cmd_demo(int argc, char **argv);
int rm_cmd_stats(int argc, char **argv);
int rm_cmd_replay(int argc, char **argv);
int rm_cmd_analyze(int argc, char **argv);
int rm_cmd_workload(int argc, char **argv);

struct rm_tls;

/* How a subcommand reaches a daemon (stats, replay): a bearer token and
 * TLS. */
typedef struct rm_cli_conn {
    const char *token_file, *tls_ca, *tls_cert, *tls_key;
} rm_cli_conn;

/* Its flags, for an rm_flag table. */
#define RM_CLI_CONN_FLAGS(c)                                                                       \
    {"auth-token-file", RM_FLAG_AT(&(c).token_file), "send this bearer token", 0, 0},              \
        {"tls-ca", RM_FLAG_AT(&(c).tls_ca), "speak TLS, verifying the server with this PEM CA", 0, \
         0},                                                                                       \
        {"tls-cert", RM_FLAG_AT(&(c).tls_cert), "PEM client certificate (mTLS; needs --tls-ca)",   \
         0, 0},                                                                                    \
    {                                                                                              \
        "tls-key", RM_FLAG_AT(&(c).tls_key), "PEM private key of --tls-cert", 0, 0                 \
    }

/* Reads c's files: the token into *token (malloc'd; NULL without
 * --auth-token-file) and the TLS material into tls (free with rm_tls_free;
 * plaintext without a CA, and a certificate needs the CA). A bad file exits
 * 2 with fs's usage. */
void rm_cli_conn_load(const rm_cli_conn *c, const rm_flagset *fs, struct rm_tls *tls, char **token);

#endif
