/* backend_profile.h: a profiling wrapper around any sde_backend (wall time per op kind, per section the
 * models mark at their level boundaries) and the section markers, which cost one comparison when profiling is
 * off. */
#ifndef SDE_BACKEND_PROFILE_H
#define SDE_BACKEND_PROFILE_H

#include <stddef.h>

#include "backend.h"

/** A backend that forwards every op to inner and times it (synchronising inner after each op, so the time of
 * queued work lands on the op that queued it). Buffers and weight handles are inner's own, so models built
 * on inner may switch to the wrapper and back. NULL on out of memory. Free with sde_prof_free(). */
sde_backend *sde_prof_wrap(sde_backend *inner);
/** Releases a wrapper from sde_prof_wrap() (not the backend it wraps); NULL or another backend is ignored. */
void sde_prof_free(sde_backend *be);
/** 1 when be is a profiling wrapper. */
int sde_prof_on(const sde_backend *be);

/** Ends the current section and starts "name" ("name.index" for index >= 0); name NULL only ends it. Time
 * outside every section is the caller's host work. A no-op unless be is a profiling wrapper. */
void sde_prof_section(sde_backend *be, const char *name, int index);
/** Starts the section of one UNet block: level (the resolution level of its input), whether it pushes a skip
 * and whether it pops one. Blocks up to the last push before the first pop are "unet.down.LEVEL", those up
 * to the first pop "unet.mid", the rest "unet.up.LEVEL"; a block's time is filed under its name when the
 * next non-block section starts. A no-op unless be is a profiling wrapper. */
void sde_prof_unet_block(sde_backend *be, int level, int push, int pop);

/** Zeroes the wrapper's counts and times (the start of a generation). */
void sde_prof_reset(sde_backend *be);
/** The table of what was timed since the reset, as text lines (malloc'd, the caller frees): per model
 * (the section names' first part), per section, per op kind, with total_s (the generation's wall time) as
 * the 100%. NULL when be is not a wrapper or on out of memory. */
char *sde_prof_report(sde_backend *be, double total_s);

#endif
