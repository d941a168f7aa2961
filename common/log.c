/* log.c: PLACEHOLDER until the config/log owner lands the logger. Replace this file entirely. */
#include <stdarg.h>
#include <stdio.h>
#include "log.h"

void sdw_log_init(int level, int json, const char *component) { (void)level; (void)json; (void)component; }
int sdw_log_level_parse(const char *s) { (void)s; return SDW_LOG_INFO; }
void sdw_log(int level, const char *event, ...) { (void)level; fprintf(stderr, "%s\n", event); }
void sdw_logf(int level, const char *event, const char *fmt, ...) { (void)level; (void)fmt; fprintf(stderr, "%s\n", event); }
