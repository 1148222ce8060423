/*
 * kd_cmd: the subcommands of the kadet binary. Each is a main-like function taking the
 * arguments after the subcommand name (argv[0] is the subcommand) and returning the exit
 * status: 0 success, 1 failure while running, 2 usage or manifest error. main.c
 * dispatches through a table, so adding a subcommand is one file and one table line.
 */
#ifndef KD_CMD_H
#define KD_CMD_H

int kd_cmd_run(int argc, char **argv);
int kd_cmd_version(int argc, char **argv);
int kd_cmd_keys(int argc, char **argv);

#endif
