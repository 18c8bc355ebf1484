#include "jansson_arena.h"

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Under AddressSanitizer (the fuzz builds) the unused part of each chunk is poisoned, so a read past a block or of a
// block after `end` is reported as it would be for malloc's blocks.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define ARENA_POISON(address, size) ASAN_POISON_MEMORY_REGION(address, size)
#define ARENA_UNPOISON(address, size) ASAN_UNPOISON_MEMORY_REGION(address, size)
#endif
#endif
#ifndef ARENA_POISON
#define ARENA_POISON(address, size) ((void)(address), (void)(size))
#define ARENA_UNPOISON(address, size) ((void)(address), (void)(size))
#endif

// Small blocks are cut from 64 KiB chunks; a block of 16 KiB or more is a malloc of its own, tracked so that `end`
// can free it (jansson never frees a parsed tree's blocks, because the tree is dropped without json_decref).
enum { CHUNK_BYTES = 64 * 1024, LARGE_BYTES = 16 * 1024, ALIGNMENT = 16 };

typedef struct chunk {
    struct chunk *next;
    size_t size;
    size_t used;
    size_t padding;  // keeps `data` 16-byte aligned
    _Alignas(ALIGNMENT) unsigned char data[];
} chunk_t;

typedef struct arena {
    unsigned depth;
    int registered;    // the thread-exit destructor is set
    chunk_t *first;    // kept between scopes
    chunk_t *current;  // the chunk being cut
    void **large;      // blocks malloc'd in this scope and not yet freed
    size_t large_count;
    size_t large_capacity;
    // Counted where malloc and free are called, for tests: what this thread's arena holds from the system.
    size_t live_chunks;
    size_t live_large;
} arena_t;

static _Thread_local arena_t thread_arena;
static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

static void release_chunks(arena_t *arena, chunk_t *chunk) {
    while (chunk) {
        chunk_t *next = chunk->next;
        ARENA_UNPOISON(chunk->data, chunk->size);
        free(chunk);
        arena->live_chunks--;
        chunk = next;
    }
}

static void thread_exit(void *unused) {
    (void)unused;
    arena_t *arena = &thread_arena;
    release_chunks(arena, arena->first);
    free(arena->large);
    memset(arena, 0, sizeof *arena);
}

static void make_exit_key(void) { pthread_key_create(&exit_key, thread_exit); }

static chunk_t *new_chunk(arena_t *arena, size_t size) {
    chunk_t *chunk = malloc(sizeof(chunk_t) + size);
    if (chunk) {
        arena->live_chunks++;
        chunk->next = NULL;
        chunk->size = size;
        chunk->used = 0;
        ARENA_POISON(chunk->data, size);
    }
    return chunk;
}

/// A block malloc'd on its own and listed, so that `end` frees it if jansson does not.
static void *tracked_malloc(arena_t *arena, size_t size) {
    if (arena->large_count == arena->large_capacity) {
        size_t capacity = arena->large_capacity ? arena->large_capacity * 2 : 16;
        void **grown = realloc(arena->large, capacity * sizeof(void *));
        if (!grown) return NULL;
        arena->large = grown;
        arena->large_capacity = capacity;
    }
    void *block = malloc(size);
    if (block) {
        arena->large[arena->large_count++] = block;
        arena->live_large++;
    }
    return block;
}

static void *arena_malloc(size_t size) {
    arena_t *arena = &thread_arena;
    if (arena->depth == 0) return malloc(size);
    if (size >= LARGE_BYTES) return tracked_malloc(arena, size);
    size_t need = (size + (ALIGNMENT - 1)) & ~(size_t)(ALIGNMENT - 1);
    chunk_t *chunk = arena->current;
    if (!chunk || chunk->size - chunk->used < need) {
        // `current` is always the last chunk: `end` releases every chunk after the first.
        chunk_t *added = new_chunk(arena, CHUNK_BYTES);
        if (!added) return tracked_malloc(arena, size);  // no chunk to be had: a listed block of its own
        if (chunk) {
            chunk->next = added;
        } else {
            arena->first = added;
        }
        arena->current = chunk = added;
    }
    void *block = chunk->data + chunk->used;
    chunk->used += need;
    ARENA_UNPOISON(block, size);
    return block;
}

static int in_chunks(const arena_t *arena, const unsigned char *pointer) {
    for (const chunk_t *chunk = arena->first; chunk; chunk = chunk->next) {
        if (pointer >= chunk->data && pointer < chunk->data + chunk->size) return 1;
    }
    return 0;
}

static void arena_free(void *pointer) {
    arena_t *arena = &thread_arena;
    if (arena->depth == 0 || pointer == NULL) {
        free(pointer);
        return;
    }
    if (in_chunks(arena, pointer)) return;  // released with the chunk
    // A large block: most often the one just grown past (jansson's string buffer), so search from the end.
    for (size_t index = arena->large_count; index > 0; index--) {
        if (arena->large[index - 1] == pointer) {
            arena->large[index - 1] = arena->large[--arena->large_count];
            free(pointer);
            arena->live_large--;
            return;
        }
    }
    free(pointer);  // allocated before the scope began
}

void swift_celery_json_arena_begin(void) {
    arena_t *arena = &thread_arena;
    if (arena->depth++ > 0) return;
    if (!arena->registered) {
        pthread_once(&exit_key_once, make_exit_key);
        pthread_setspecific(exit_key, arena);
        arena->registered = 1;
    }
    // With no first chunk yet (or none to be had), the first small block makes it.
    arena->current = arena->first;
}

void swift_celery_json_arena_end(void) {
    arena_t *arena = &thread_arena;
    if (arena->depth == 0 || --arena->depth > 0) return;
    for (size_t index = 0; index < arena->large_count; index++) {
        free(arena->large[index]);
        arena->live_large--;
    }
    arena->large_count = 0;
    if (arena->first) {
        release_chunks(arena, arena->first->next);
        arena->first->next = NULL;
        ARENA_POISON(arena->first->data, arena->first->used);
        arena->first->used = 0;
    }
    arena->current = arena->first;
}

void swift_celery_json_arena_live_blocks(unsigned long *chunks, unsigned long *large) {
    *chunks = thread_arena.live_chunks;
    *large = thread_arena.live_large;
}

unsigned long swift_celery_json_arena_retained_bytes(void) {
    const arena_t *arena = &thread_arena;
    unsigned long total = 0;
    for (const chunk_t *chunk = arena->first; chunk; chunk = chunk->next) total += sizeof(chunk_t) + chunk->size;
    return total;
}

__attribute__((constructor)) static void install(void) { json_set_alloc_funcs(arena_malloc, arena_free); }
