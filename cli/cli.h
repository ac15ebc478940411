/* cli.h -- subcommands of the radixmesh CLI. Each returns the exit code:
 * 0 success, 1 failure at run time, 2 bad usage. */
#ifndef RM_CLI_H
#define RM_CLI_H

int rm_cmd_demo(int argc, char **argv);
int rm_cmd_stats(int argc, char **argv);
int rm_cmd_replay(int argc, char **argv);
int rm_cmd_analyze(int argc, char **argv);

#endif
