#ifndef SWIFT_CELERY_JANSSON_ARENA_H
#define SWIFT_CELERY_JANSSON_ARENA_H

/// A per-thread bump allocator for jansson (installed with json_set_alloc_funcs when the process loads).
///
/// Between `swift_celery_json_arena_begin()` and `swift_celery_json_arena_end()` on one thread, every block jansson
/// allocates comes from that thread's arena and jansson's frees of those blocks cost nothing; `end` releases them
/// all at once. A tree built inside the scope must not be used, or released with json_decref, after `end`: the
/// JSON module converts or dumps it inside the scope and then drops it. Outside a scope jansson uses malloc and
/// free as usual. Scopes nest; only the outermost `end` releases. When no chunk can be had, blocks are malloc'd one by
/// one and listed, so `end` still releases everything.
void swift_celery_json_arena_begin(void);
void swift_celery_json_arena_end(void);

/// Bytes in the chunks the calling thread's arena holds (for tests): one chunk between scopes.
unsigned long swift_celery_json_arena_retained_bytes(void);

/// How many chunks and large blocks the calling thread's arena has from malloc and has not freed (for tests):
/// one chunk and no large block between scopes.
void swift_celery_json_arena_live_blocks(unsigned long *chunks, unsigned long *large);

#endif
