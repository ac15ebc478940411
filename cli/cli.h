/* cli.h -- subcommands of the radixmesh CLI. Each returns the exit code:
 * 0 success, 1 failure at run time, 2 bad usage. */
#ifndef RM_CLI_H
#define RM_CLI_H

int rm_cmd_demo(int argc, char **argv);
int rm_cmd_stats(int argc, char **argv);
int rm_cmd_replay(int argc, char **argv);
int rm_cmd_analyze(int argc, char **argv);
int rm_cmd_workload(int argc, char **argv);

struct rm_tls;

/* The CLI's TLS towards a daemon from --tls-ca/--tls-cert/--tls-key (any
 * may be NULL: plaintext without a CA). A certificate needs the CA. Returns
 * 0 (free with rm_tls_free), or -1 with the reason in err. */
int rm_cli_tls(struct rm_tls *tls, const char *ca, const char *cert, const char *key, char *err,
               unsigned long errlen);

#endif
