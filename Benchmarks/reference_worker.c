/* Benchmarks/reference_worker.c: the least a Celery worker on Redis can do for one task, as a yardstick for the
 * suite's latency rows (not a worker: it runs nothing, and loses what it holds if killed).
 *
 *     reference_worker HOST PORT DB QUEUE brpop|blmove [PASSWORD [USERNAME]]
 *
 * One thread, one blocking connection. brpop: BRPOP QUEUE, find the task id in the envelope (the `"id": "` header
 * kombu writes), then SETEX celery-task-meta-<id> and PUBLISH it in one write, and read both replies: two trips
 * through Redis per task, the least any worker can do to take a message and publish its result. blmove: the trips
 * swift-celery makes by default, without its work: wake on BLMOVE QUEUE QUEUE RIGHT RIGHT (the message stays in
 * the list), pop it and record it in a hash and a sorted set as kombu's `unacked` and `unacked_index` (keys of
 * its own) in one script, then SETEX + PUBLISH and the ack's HDEL + ZREM: three trips.
 * Prints "ready" once connected, authenticated and on database DB; exits 1 with a message on any error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fd = -1;
static char *buffer;
static size_t capacity, start, end;

static void fail(const char *what) {
    fprintf(stderr, "reference_worker: %s: %s\n", what, errno ? strerror(errno) : "unexpected reply");
    exit(1);
}

static void send_all(const char *bytes, size_t length) {
    while (length > 0) {
        ssize_t n = write(fd, bytes, length);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail("write");
        bytes += n;
        length -= (size_t)n;
    }
}

/* Makes at least `need` unread bytes available in buffer[start..end). */
static void fill(size_t need) {
    while (end - start < need) {
        if (start > 0) {
            memmove(buffer, buffer + start, end - start);
            end -= start;
            start = 0;
        }
        if (capacity - end < 65536) {
            capacity = capacity * 2 + need + 65536;
            buffer = realloc(buffer, capacity);
            if (!buffer) fail("realloc");
        }
        errno = 0;
        ssize_t n = read(fd, buffer + end, capacity - end);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) {
            fprintf(stderr, "reference_worker: Redis closed the connection\n");
            exit(1);
        }
        if (n < 0) fail("read");
        end += (size_t)n;
    }
}

/* Reads one CRLF-terminated line; returns it (NUL-terminated in place) and advances past it. */
static char *line(void) {
    for (;;) {
        char *crlf = end > start ? memmem(buffer + start, end - start, "\r\n", 2) : NULL;
        if (crlf) {
            char *text = buffer + start;
            *crlf = 0;
            start = (size_t)(crlf - buffer) + 2;
            return text;
        }
        fill(end - start + 1);
    }
}

/* Reads a one-line reply (a simple string or an integer); fails on an error reply. */
static void expect_simple(void) {
    errno = 0;
    char *text = line();
    if (text[0] == '-') {
        fprintf(stderr, "reference_worker: Redis answered %s\n", text);
        exit(1);
    }
}

/* Reads a bulk string; returns its offset in the buffer (valid until the next read) and its length. */
static size_t bulk(size_t *length) {
    errno = 0;
    char *text = line();
    if (text[0] != '$') fail("bulk string expected");
    long n = strtol(text + 1, NULL, 10);
    if (n < 0) fail("nil bulk string");
    fill((size_t)n + 2);
    size_t offset = start;
    start += (size_t)n + 2;
    *length = (size_t)n;
    return offset;
}

static void command(const char **arguments, const size_t *lengths, int count, char **out, size_t *out_length) {
    size_t size = 32;
    for (int i = 0; i < count; i++) size += lengths[i] + 32;
    *out = realloc(*out, *out_length + size);
    if (!*out) fail("realloc");
    char *p = *out + *out_length;
    p += sprintf(p, "*%d\r\n", count);
    for (int i = 0; i < count; i++) {
        p += sprintf(p, "$%zu\r\n", lengths[i]);
        memcpy(p, arguments[i], lengths[i]);
        p += lengths[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    *out_length = (size_t)(p - *out);
}

/* Sends one command and reads its one-line reply. */
static void call_simple(const char **arguments, const size_t *lengths, int count) {
    char *request = NULL;
    size_t request_length = 0;
    command(arguments, lengths, count, &request, &request_length);
    send_all(request, request_length);
    free(request);
    expect_simple();
}

int main(int argc, char **argv) {
    if (argc < 6 || argc > 8 || (strcmp(argv[5], "brpop") != 0 && strcmp(argv[5], "blmove") != 0)) {
        fprintf(stderr, "usage: reference_worker HOST PORT DB QUEUE brpop|blmove [PASSWORD [USERNAME]]\n");
        return 2;
    }
    int blmove = strcmp(argv[5], "blmove") == 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *address;
    int status = getaddrinfo(argv[1], argv[2], &hints, &address);
    if (status != 0) {
        fprintf(stderr, "reference_worker: %s:%s: %s\n", argv[1], argv[2], gai_strerror(status));
        return 1;
    }
    fd = socket(address->ai_family, address->ai_socktype, address->ai_protocol);
    if (fd < 0 || connect(fd, address->ai_addr, address->ai_addrlen) != 0) fail("connect");
    freeaddrinfo(address);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    char *request = NULL;
    size_t request_length = 0;
    if (argc >= 7) { /* AUTH [USERNAME] PASSWORD */
        const char *arguments[] = {"AUTH", argv[argc - 1], argv[6]};
        size_t lengths[] = {4, strlen(argv[argc - 1]), strlen(argv[6])};
        call_simple(arguments, lengths, argc - 5);
    }
    if (strcmp(argv[3], "0") != 0) {
        const char *arguments[] = {"SELECT", argv[3]};
        size_t lengths[] = {6, strlen(argv[3])};
        call_simple(arguments, lengths, 2);
    }
    printf("ready\n");
    fflush(stdout);

    const char *queue = argv[4];
    /* Keys of its own, so no worker ever restores what it records. */
    static const char unacked[] = "reference:unacked", unacked_index[] = "reference:unacked_index";
    static const char record[] = "local m = redis.call('RPOP', KEYS[1]) if m then redis.call('HSET', KEYS[2], "
                                 "ARGV[1], m) redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1]) end return m";
    static const char meta[] = "{\"status\": \"SUCCESS\", \"result\": null, \"traceback\": null, \"children\": []}";
    for (;;) {
        request_length = 0;
        size_t length, offset;
        if (blmove) {
            const char *watch[] = {"BLMOVE", queue, queue, "RIGHT", "RIGHT", "0"};
            size_t watch_lengths[] = {6, strlen(queue), strlen(queue), 5, 5, 1};
            command(watch, watch_lengths, 6, &request, &request_length);
            send_all(request, request_length);
            bulk(&length);
            request_length = 0;
            const char *pop[] = {"EVAL", record, "3", queue, unacked, unacked_index, "reference", "0"};
            size_t pop_lengths[] = {
                4, sizeof record - 1, 1, strlen(queue), sizeof unacked - 1, sizeof unacked_index - 1, 9, 1};
            command(pop, pop_lengths, 8, &request, &request_length);
            send_all(request, request_length);
            offset = bulk(&length);
        } else {
            const char *pop[] = {"BRPOP", queue, "0"};
            size_t pop_lengths[] = {5, strlen(queue), 1};
            command(pop, pop_lengths, 3, &request, &request_length);
            send_all(request, request_length);
            errno = 0;
            if (strcmp(line(), "*2") != 0) fail("BRPOP reply expected");
            bulk(&length); /* the queue's name */
            offset = bulk(&length);
        }
        char *id = memmem(buffer + offset, length, "\"id\": \"", 7);
        if (!id) fail("no task id in the envelope");
        id += 7;
        char *quote = memchr(id, '"', (size_t)(buffer + offset + length - id));
        if (!quote || quote - id > 200) fail("no task id in the envelope");
        char key[256];
        int key_length = snprintf(key, sizeof key, "celery-task-meta-%.*s", (int)(quote - id), id);

        request_length = 0;
        const char *store[] = {"SETEX", key, "86400", meta};
        size_t store_lengths[] = {5, (size_t)key_length, 5, sizeof meta - 1};
        command(store, store_lengths, 4, &request, &request_length);
        const char *publish[] = {"PUBLISH", key, meta};
        size_t publish_lengths[] = {7, (size_t)key_length, sizeof meta - 1};
        command(publish, publish_lengths, 3, &request, &request_length);
        if (blmove) {
            const char *hdel[] = {"HDEL", unacked, "reference"};
            size_t hdel_lengths[] = {4, sizeof unacked - 1, 9};
            command(hdel, hdel_lengths, 3, &request, &request_length);
            const char *zrem[] = {"ZREM", unacked_index, "reference"};
            size_t zrem_lengths[] = {4, sizeof unacked_index - 1, 9};
            command(zrem, zrem_lengths, 3, &request, &request_length);
        }
        send_all(request, request_length);
        if (blmove) {
            expect_simple();
            expect_simple();
        }
        expect_simple();
        expect_simple();
    }
}
