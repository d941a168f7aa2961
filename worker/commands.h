/* commands.h: the subcommands of sd-worker-engine, one file each (cli_*.c, worker_loop.c).
 * Each takes argv from the command name on and returns the process exit code. */
#ifndef SDW_COMMANDS_H
#define SDW_COMMANDS_H

/** generate --model PATH --prompt TEXT ... --output OUT.png */
int sdw_cmd_generate(int argc, char **argv);
/** tokenize --tokenizer PATH TEXT */
int sdw_cmd_tokenize(int argc, char **argv);
/** mkmodel --preset NAME [--seed N] [--dtype f16|f32] --output PATH (tiny, or a full-size random preset) */
int sdw_cmd_mkmodel(int argc, char **argv);
/** worker --fd N --model PATH ...: the worker process loop the supervisor starts. Exit 0 clean, 2 fatal
 * config/model error (not respawned), other codes respawned with backoff. */
int sdw_cmd_worker(int argc, char **argv);

#endif
