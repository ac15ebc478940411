/* radixmesh: the command-line tool. */
#include <grpc/grpc.h>
#include <stdio.h>
#include <string.h>

#include "bearer.h"
#include "cli.h"
#include "tls.h"

void rm_cli_conn_load(const rm_cli_conn *c, const rm_flagset *fs, rm_tls *tls, char **token)
{
    char err[256];
    *token = NULL;
    if (c->token_file && !(*token = rm_read_token_file(c->token_file, err, sizeof err)))
        rm_flags_fail(fs, "--auth-token-file: %s", err);
    if ((c->tls_cert || c->tls_key) && !c->tls_ca)
        rm_flags_fail(fs, "--tls-cert/--tls-key need --tls-ca (the server's CA)");
    if (rm_tls_load(tls, c->tls_cert, c->tls_key, c->tls_ca, 0, err, sizeof err) != 0)
        rm_flags_fail(fs, "%s", err);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: radixmesh COMMAND [options]\n\n"
                 "commands:\n"
                 "  demo    play prefix-sharing scenarios against a node; print hit rate and\n"
                 "          the KV memory sharing saves\n"
                 "  replay  replay a trace against a live cluster through its router\n"
                 "  analyze what prefix sharing would save on a batch of prompts (offline)\n"
                 "  workload write a generated workload (agentic, chat, builtin) as JSONL\n"
                 "  stats   print a node's statistics\n\n"
                 "'radixmesh COMMAND --help' describes each command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("radixmesh %s\n", RM_VERSION);
        return 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"demo", rm_cmd_demo},
                {"stats", rm_cmd_stats},
                {"replay", rm_cmd_replay},
                {"analyze", rm_cmd_analyze},
                {"workload", rm_cmd_workload}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (!strcmp(argv[1], cmds[i].name)) {
            grpc_init();
            int rc = cmds[i].fn(argc - 1, argv + 1);
            grpc_shutdown();
            return rc;
        }
    }
    fprintf(stderr, "radixmesh: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
