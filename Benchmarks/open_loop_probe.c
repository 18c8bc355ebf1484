/* Benchmarks/open_loop_probe.c: the suite's open-loop latency probe, in C. It does what `SocketProbe.open_loop` in
 * suite.py does (LPUSH batches every millisecond at a set rate, a PSUBSCRIBE on `celery-task-meta-*`, each task
 * timed from its batch's write to the read that brought its PUBLISH) at a small share of the CPU: at 24,000
 * tasks/s the Python probe takes about a third of one of the two cores the worker and Redis share.
 *
 *     open_loop_probe HOST PORT DB QUEUE RATE SECONDS SETTLE MESSAGES worker|itself [PASSWORD [USERNAME]]
 *
 * MESSAGES: a file with one message per line, `<task id> <envelope>`, sent in order; each task id ends in its line
 * number (0-based) as 12 hex digits, so a result's channel names its message without a lookup. `itself`: no worker;
 * the probe sends `PUBLISH celery-task-meta-<id> {}` and an RPOP of QUEUE right behind each LPUSH (the floor of this
 * way of timing).
 * Sends for SECONDS, then waits up to SETTLE more seconds for the missing results. Each time it wakes (a reply came,
 * or its wait ended) it sends every message then due; the environment's SPACING_US is the longest wait in
 * microseconds (default 1000, as the Python probe's); 0 waits until the next message is due, so each goes at its
 * own time.
 * Prints one latency in milliseconds per line (in the order the results came), then `sent N`; exits 1 with a
 * message on any error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void fail(const char *what) {
    fprintf(stderr, "open_loop_probe: %s: %s\n", what, errno ? strerror(errno) : "unexpected reply");
    exit(1);
}

struct connection {
    int fd;
    char *buffer;
    size_t capacity, start, end;
};

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void send_all(struct connection *c, const char *bytes, size_t length) {
    while (length > 0) {
        ssize_t n = write(c->fd, bytes, length);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail("write");
        bytes += n;
        length -= (size_t)n;
    }
}

/* Reads what one read() gives into the buffer (blocking if nothing has come). */
static void receive(struct connection *c) {
    if (c->start > 0) {
        memmove(c->buffer, c->buffer + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    }
    if (c->capacity - c->end < 65536) {
        c->capacity = c->capacity * 2 + 65536;
        c->buffer = realloc(c->buffer, c->capacity);
        if (!c->buffer) fail("realloc");
    }
    for (;;) {
        errno = 0;
        ssize_t n = read(c->fd, c->buffer + c->end, c->capacity - c->end);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) {
            fprintf(stderr, "open_loop_probe: Redis closed the connection\n");
            exit(1);
        }
        if (n < 0) fail("read");
        c->end += (size_t)n;
        return;
    }
}

/* Parses one RESP line starting at `at` in [at, end): its end (past the CRLF), or 0 if incomplete. */
static size_t line_end(const struct connection *c, size_t at) {
    char *crlf = c->end > at ? memmem(c->buffer + at, c->end - at, "\r\n", 2) : NULL;
    return crlf ? (size_t)(crlf - c->buffer) + 2 : 0;
}

/* One complete reply at c->start: returns 1 and fills `elements` (up to 4 bulk strings of an array; integers and
 * simple strings leave theirs empty) and advances past it, or 0 if it has not all come yet. Fails on an error. */
static int next_reply(struct connection *c, const char **elements, size_t *lengths, int *count) {
    size_t at = c->start, next = line_end(c, at);
    if (!next) return 0;
    char type = c->buffer[at];
    if (type == '-') {
        fprintf(stderr, "open_loop_probe: Redis answered %.*s\n", (int)(next - at - 2), c->buffer + at);
        exit(1);
    }
    *count = 0;
    if (type == '$') { /* a bulk string: its text is not kept */
        long n = strtol(c->buffer + at + 1, NULL, 10);
        if (n > 0 && c->end < next + (size_t)n + 2) return 0;
        c->start = n > 0 ? next + (size_t)n + 2 : next;
        return 1;
    }
    if (type != '*') { /* a simple string or an integer */
        c->start = next;
        return 1;
    }
    long items = strtol(c->buffer + at + 1, NULL, 10);
    at = next;
    for (long i = 0; i < items; i++) {
        next = line_end(c, at);
        if (!next) return 0;
        if (c->buffer[at] == '$') {
            long n = strtol(c->buffer + at + 1, NULL, 10);
            if (n < 0 || c->end < next + (size_t)n + 2) return 0;
            if (*count < 4) {
                elements[*count] = c->buffer + next;
                lengths[*count] = (size_t)n;
                (*count)++;
            }
            at = next + (size_t)n + 2;
        } else {
            at = next;
        }
    }
    c->start = at;
    return 1;
}

/* Reads until one whole reply has come and returns it, as `next_reply`. */
static void reply(struct connection *c, const char **elements, size_t *lengths, int *count) {
    while (!next_reply(c, elements, lengths, count)) receive(c);
}

static void append_command(const char **arguments, const size_t *lengths, int count, char **out, size_t *length,
                           size_t *capacity) {
    size_t size = 32;
    for (int i = 0; i < count; i++) size += lengths[i] + 32;
    if (*length + size > *capacity) {
        *capacity = (*capacity + size) * 2;
        *out = realloc(*out, *capacity);
        if (!*out) fail("realloc");
    }
    char *p = *out + *length;
    p += sprintf(p, "*%d\r\n", count);
    for (int i = 0; i < count; i++) {
        p += sprintf(p, "$%zu\r\n", lengths[i]);
        memcpy(p, arguments[i], lengths[i]);
        p += lengths[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    *length = (size_t)(p - *out);
}

static void call(struct connection *c, const char **arguments, const size_t *lengths, int count) {
    char *request = NULL;
    size_t length = 0, capacity = 0;
    append_command(arguments, lengths, count, &request, &length, &capacity);
    send_all(c, request, length);
    free(request);
    const char *elements[4];
    size_t element_lengths[4];
    int elements_count;
    reply(c, elements, element_lengths, &elements_count);
}

static void open_connection(struct connection *c, char **argv, int argc) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *address;
    int status = getaddrinfo(argv[1], argv[2], &hints, &address);
    if (status != 0) {
        fprintf(stderr, "open_loop_probe: %s:%s: %s\n", argv[1], argv[2], gai_strerror(status));
        exit(1);
    }
    c->fd = socket(address->ai_family, address->ai_socktype, address->ai_protocol);
    if (c->fd < 0 || connect(c->fd, address->ai_addr, address->ai_addrlen) != 0) fail("connect");
    freeaddrinfo(address);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (argc >= 11) { /* AUTH [USERNAME] PASSWORD */
        const char *arguments[] = {"AUTH", argv[argc - 1], argv[10]};
        size_t lengths[] = {4, strlen(argv[argc - 1]), strlen(argv[10])};
        call(c, arguments, lengths, argc - 9);
    }
    if (strcmp(argv[3], "0") != 0) {
        const char *arguments[] = {"SELECT", argv[3]};
        size_t lengths[] = {6, strlen(argv[3])};
        call(c, arguments, lengths, 2);
    }
}

int main(int argc, char **argv) {
    if (argc < 10 || argc > 12 || (strcmp(argv[9], "worker") != 0 && strcmp(argv[9], "itself") != 0)) {
        fprintf(stderr, "usage: open_loop_probe HOST PORT DB QUEUE RATE SECONDS SETTLE MESSAGES worker|itself "
                        "[PASSWORD [USERNAME]]\n");
        return 2;
    }
    const char *queue = argv[4];
    double rate = atof(argv[5]), seconds = atof(argv[6]), settle = atof(argv[7]);
    double spacing = getenv("SPACING_US") ? atof(getenv("SPACING_US")) / 1e6 : 0.001;
    int itself = strcmp(argv[9], "itself") == 0;
    if (rate <= 0 || seconds <= 0 || settle < 0) {
        fprintf(stderr, "open_loop_probe: RATE and SECONDS must be positive, SETTLE not negative\n");
        return 2;
    }

    /* Every command made before the clock starts; offsets[i] is where message i's commands begin. */
    FILE *file = fopen(argv[8], "r");
    if (!file) fail(argv[8]);
    char *commands = NULL, *text = NULL;
    size_t length = 0, capacity = 0, text_capacity = 0, count = 0, offsets_capacity = 1024;
    size_t *offsets = malloc(offsets_capacity * sizeof *offsets);
    if (!offsets) fail("malloc");
    ssize_t read_length;
    while ((read_length = getline(&text, &text_capacity, file)) > 0) {
        if (text[read_length - 1] == '\n') text[--read_length] = 0;
        char *space = memchr(text, ' ', (size_t)read_length);
        if (!space || space - text < 12) {
            fprintf(stderr, "open_loop_probe: line %zu of %s is not `<task id> <envelope>`\n", count + 1, argv[8]);
            return 1;
        }
        if (count + 1 >= offsets_capacity) {
            offsets_capacity *= 2;
            offsets = realloc(offsets, offsets_capacity * sizeof *offsets);
            if (!offsets) fail("realloc");
        }
        offsets[count++] = length;
        size_t id_length = (size_t)(space - text);
        const char *push[] = {"LPUSH", queue, space + 1};
        size_t push_lengths[] = {5, strlen(queue), (size_t)read_length - id_length - 1};
        append_command(push, push_lengths, 3, &commands, &length, &capacity);
        if (itself) {
            char channel[256];
            int channel_length = snprintf(channel, sizeof channel, "celery-task-meta-%.*s", (int)id_length, text);
            const char *publish[] = {"PUBLISH", channel, "{}"};
            size_t publish_lengths[] = {7, (size_t)channel_length, 2};
            append_command(publish, publish_lengths, 3, &commands, &length, &capacity);
            /* Takes the message back, as a worker would, so the list stays short however long the run. */
            const char *pop[] = {"RPOP", queue};
            size_t pop_lengths[] = {4, strlen(queue)};
            append_command(pop, pop_lengths, 2, &commands, &length, &capacity);
        }
    }
    fclose(file);
    free(text);
    offsets[count] = length;
    double *sent_at = calloc(count + 1, sizeof *sent_at);
    double *latencies = malloc((count + 1) * sizeof *latencies);
    if (!sent_at || !latencies) fail("malloc");

    struct connection push = {0}, sub = {0};
    open_connection(&push, argv, argc);
    open_connection(&sub, argv, argc);
    {
        const char *arguments[] = {"PSUBSCRIBE", "celery-task-meta-*"};
        size_t lengths[] = {10, 18};
        call(&sub, arguments, lengths, 2);
    }

    prctl(PR_SET_TIMERSLACK, 1000UL); /* wake within a microsecond of the next message's time, not 50 */
    size_t sent = 0, arrived = 0;
    double start = now_seconds();
    for (;;) {
        double now = now_seconds(), elapsed = now - start;
        long wait_ns;
        if (elapsed < seconds) {
            size_t due = (size_t)(elapsed * rate);
            if (due > count) due = count;
            if (due > sent) {
                for (size_t i = sent; i < due; i++) sent_at[i] = now;
                send_all(&push, commands + offsets[sent], offsets[due] - offsets[sent]);
                sent = due;
            }
            wait_ns = spacing > 0 ? (long)(spacing * 1e9) : (long)(((double)(sent + 1) / rate - elapsed) * 1e9);
            if (wait_ns < 1000) wait_ns = 1000;
        } else if (arrived == sent || elapsed > seconds + settle) {
            break;
        } else {
            wait_ns = 50000000;
        }
        struct pollfd fds[] = {{.fd = sub.fd, .events = POLLIN}, {.fd = push.fd, .events = POLLIN}};
        struct timespec wait = {.tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000};
        if (ppoll(fds, 2, &wait, NULL) < 0 && errno != EINTR) fail("poll");
        double read_at = now_seconds();
        const char *elements[4];
        size_t lengths[4];
        int elements_count;
        if (fds[0].revents) {
            receive(&sub);
            while (next_reply(&sub, elements, lengths, &elements_count)) {
                if (elements_count != 4 || lengths[0] != 8 || memcmp(elements[0], "pmessage", 8) != 0) continue;
                if (lengths[2] < 12) continue;
                char digits[13];
                memcpy(digits, elements[2] + lengths[2] - 12, 12);
                digits[12] = 0;
                char *digits_end;
                unsigned long long index = strtoull(digits, &digits_end, 16);
                if (*digits_end != 0 || index >= sent || sent_at[index] == 0) continue;
                latencies[arrived++] = (read_at - sent_at[index]) * 1000;
                sent_at[index] = 0; /* counted once */
            }
        }
        if (fds[1].revents) {
            receive(&push);
            while (next_reply(&push, elements, lengths, &elements_count)) {
            } /* the replies to LPUSH (and PUBLISH and RPOP): read and dropped */
        }
    }
    for (size_t i = 0; i < arrived; i++) printf("%.4f\n", latencies[i]);
    printf("sent %zu\n", sent);
    return 0;
}
