/* Benchmarks/jansson_floor.c: what jansson alone costs per task message on this machine, as a yardstick for the
 * suite's figures (the project decodes JSON with jansson by design, so this is a floor the worker cannot go under).
 *
 *     jansson_floor ENVELOPE BODY ITERATIONS
 *
 * ENVELOPE is a kombu envelope with an empty body (`{"body": "", ...}`) and BODY the decoded body
 * (`[args, kwargs, embed]`): the two texts the worker hands to `json_loadb` for each message, with the flags it
 * uses (any top-level value, `\u0000` allowed, repeated keys rejected in the envelope). Each iteration parses both
 * and frees the trees with jansson's default allocator (the worker's arena allocates more cheaply). Warm caches:
 * the same two texts over and over. Prints one line: "<microseconds per message> <bytes per message>"; exits 1
 * with a message if a file cannot be read or does not parse.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static char *read_file(const char *path, size_t *length) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) return NULL;
    size_t capacity = 4096, used = 0;
    char *bytes = malloc(capacity);
    size_t n;
    while (bytes != NULL && (n = fread(bytes + used, 1, capacity - used, file)) > 0) {
        used += n;
        if (used == capacity) bytes = realloc(bytes, capacity *= 2);
    }
    fclose(file);
    *length = used;
    return bytes;
}

static int parse(const char *bytes, size_t length, size_t flags) {
    json_error_t error;
    json_t *root = json_loadb(bytes, length, flags, &error);
    if (root == NULL) {
        fprintf(stderr, "jansson_floor: line %d column %d: %s\n", error.line, error.column, error.text);
        return 0;
    }
    json_decref(root);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4 || atol(argv[3]) <= 0) {
        fprintf(stderr, "usage: jansson_floor ENVELOPE BODY ITERATIONS\n");
        return 1;
    }
    size_t envelope_length, body_length;
    char *envelope = read_file(argv[1], &envelope_length);
    char *body = read_file(argv[2], &body_length);
    if (envelope == NULL || body == NULL) {
        fprintf(stderr, "jansson_floor: cannot read %s\n", envelope == NULL ? argv[1] : argv[2]);
        return 1;
    }
    const size_t common = JSON_DECODE_ANY | JSON_ALLOW_NUL;
    long iterations = atol(argv[3]);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < iterations; i++) {
        if (!parse(envelope, envelope_length, common | JSON_REJECT_DUPLICATES) || !parse(body, body_length, common))
            return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double elapsed = (double)(end.tv_sec - start.tv_sec) * 1e6 + (double)(end.tv_nsec - start.tv_nsec) / 1e3;
    printf("%.3f %zu\n", elapsed / (double)iterations, envelope_length + body_length);
    return 0;
}
