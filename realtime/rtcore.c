/* rolypoly's real-time core: the JACK process callback, in C.
 *
 * One function, rt_process, is JACK's process callback for rolypoly's client
 * (rolypoly/realtime/jack_io.py sets it up through ctypes). It runs on JACK's
 * real-time thread without Python: no interpreter lock to wait for, no
 * allocation, no locks, no system calls but clock_gettime. Each cycle it
 *
 *   1. reads JACK's cycle times and puts the cycle on the engine clock;
 *   2. starts the hits due in this cycle on their own frames and mixes a
 *      fixed set of voices of the sampled kit into the audio ports;
 *   3. writes the same hits as MIDI notes at their frame offsets, and the
 *      MIDI clock ticks due in the cycle;
 *   4. copies the partner input (and the drums just played) into rings, and
 *      incoming MIDI (clock messages; every message of the MIDI input) into
 *      others, for Python to read;
 *   5. times itself.
 *
 * Python and this code share one struct (rt_state, mirrored by RtState in
 * jack_io.py) and arrays Python allocated. Every ring has one writer: Python
 * writes hits and advances hits_written; this code reads them and advances
 * its own read counters; it writes the input/clock rings and advances their
 * counters, which Python reads. Counters are 64-bit and written after the
 * data (x86-64 and arm64 keep 64-bit aligned stores whole; the barrier keeps
 * the compiler from reordering).
 *
 * No JACK header is needed: JACK's functions come in as pointers.
 */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>
#include <time.h>

#define N_CLASSES 9
#define CYCLE_COLUMNS 5
#define BARRIER() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define NO_FADE (((int64_t)1) << 62)

typedef uint32_t nframes_t;
typedef struct { nframes_t time; size_t size; unsigned char *buffer; } midi_event_t;

typedef void *(*get_buffer_f)(void *port, nframes_t n);
typedef int (*cycle_times_f)(void *client, nframes_t *frames, uint64_t *usecs, uint64_t *next_usecs, float *period_usecs);
typedef void (*midi_clear_f)(void *buffer);
typedef int (*midi_write_f)(void *buffer, nframes_t time, const unsigned char *data, size_t size);
typedef uint32_t (*midi_count_f)(void *buffer);
typedef int (*midi_get_f)(midi_event_t *event, void *buffer, uint32_t index);

/* numpy dtype HIT in drum_out.py; note = channel * 128 + pitch of the player's note, or < 0: the class's */
typedef struct { double time; int64_t cls; int64_t vel; int64_t note; } hit_t;

typedef struct {
    /* JACK */
    void *client;
    void *out_port[2];
    void *midi_port;
    void *clock_port;
    void *in_port;
    void *clock_in_port;
    get_buffer_f get_buffer;
    cycle_times_f cycle_times;
    midi_clear_f midi_clear;
    midi_write_f midi_write;
    midi_count_f midi_count;
    midi_get_f midi_get;
    int64_t clock_raw;          /* 1: jack_get_time reads CLOCK_MONOTONIC_RAW, 0: CLOCK_MONOTONIC */
    int64_t rate;

    /* the kit (SampleKit in rolypoly/kit.py) */
    const float *bank;
    const int64_t *starts;      /* (sounds, layers): sounds 0..8 are the classes', then notes' own */
    const int64_t *ends;
    int64_t layers;
    const int64_t *layer_of;    /* (sounds, 128) */
    const float *gain_of;       /* (sounds, 128) */
    const int64_t *pitches;     /* 9: each class's General MIDI note */
    const int64_t *sound_of_pitch;  /* 128: a note's own sound, or < 0: its class's */
    const int64_t *choke_of_pitch;  /* 128: choke group, 0: none */
    int64_t choke_frames;       /* a choked voice fades out over this many frames */

    /* hits, written by Python */
    hit_t *hits;
    int64_t hit_capacity;
    volatile int64_t hits_written;
    volatile int64_t audio_read;
    volatile int64_t midi_read;
    int64_t audio_on, midi_on;

    /* voices */
    int64_t voices;
    int64_t *v_pos;             /* bank index of the block's first frame */
    int64_t *v_start;
    int64_t *v_end;
    int64_t *v_age;
    float *v_gain;
    int64_t *v_group;           /* choke group of the voice's note */
    int64_t *v_fade_end;        /* bank index a choked voice is silent from (NO_FADE: not choked) */
    int64_t started;
    int64_t stolen;

    /* time */
    volatile double origin;     /* CLOCK_MONOTONIC seconds of engine time 0 */
    volatile int64_t have_origin;
    double offset_ns;           /* CLOCK_MONOTONIC - JACK clock */
    int64_t have_offset;
    double cycle_time;          /* engine time of this cycle's first frame (JACK's estimate) */
    double frame_s;
    int64_t cycle_frame;
    double output_latency_s;    /* calibrated, beyond what JACK reports */
    double input_latency_s;
    double midi_latency_s;      /* an external synth's: MIDI leaves this much earlier */
    volatile int64_t playback_latency;       /* frames, as JACK reports for out_1's connections */
    volatile int64_t midi_playback_latency;
    volatile int64_t capture_latency;

    /* MIDI notes */
    double gate_s;
    double off_at[N_CLASSES];   /* engine time a note-off is due, or < 0: none */
    int64_t off_note[N_CLASSES]; /* the note (channel * 128 + pitch) that note-off ends */

    /* MIDI clock out */
    const double *ticks;
    volatile int64_t tick_count;
    int64_t next_tick;
    double clock_start_at;
    volatile int64_t clock_ready;
    volatile int64_t clock_stop;
    int64_t clock_started;
    int64_t clock_stopped;
    int64_t ticks_sent;

    /* partner input and the drums played, frame by frame, for Python */
    float *in_ring;
    float *drum_ring;
    int64_t ring_frames;
    volatile int64_t ring_written;
    double *cycle_ring;         /* per cycle: ring index of its first frame, engine time it was played, frame_s,
                                   JACK's frame counter and time (µs) at the cycle's start */
    int64_t cycle_capacity;
    volatile int64_t cycles_written;

    /* MIDI clock in, for Python: engine time and up to 3 bytes */
    double *clock_in_times;
    unsigned char *clock_in_bytes;   /* 4 per message: size, data... */
    int64_t clock_in_capacity;
    volatile int64_t clock_in_written;

    /* MIDI in (port midi_in), for Python: every message of up to 3 bytes, the engine time of the frame it
       came on and the cycle (count of cycles run) it came in: a recorder that never misses a cycle the way a
       Python callback does (the output bench's capture), or a MIDI partner */
    void *midi_in_port;
    double *midi_in_times;
    int64_t *midi_in_cycles;
    unsigned char *midi_in_bytes;    /* 4 per message: size, data... */
    int64_t midi_in_capacity;
    volatile int64_t midi_in_written;

    /* diagnostics */
    int64_t *cost_ns;
    int16_t *sounding;
    int64_t *cycle_frames;      /* JACK's frame counter at each cycle's start (which cycles this client ran) */
    double *cycle_starts;       /* engine time of each cycle's first frame (JACK's estimate); NaN: not timed */
    double *cycle_woke;         /* engine time this callback began each cycle; NaN: not timed */
    int64_t cost_capacity;
    volatile int64_t cycles;
    int64_t late;
    double late_max_s;
    int64_t midi_late;
    int64_t played;
    int64_t midi_sent;
    int64_t midi_errors;

    /* JACK's notifications, counted here by C callbacks on libjack's own thread: a Python callback
       there needs the interpreter lock, and a thread holding it while it opens another JACK client
       (python-rtmidi does) waits for the server, which waits for that notification: a deadlock. */
    volatile int64_t xrun_count;
    volatile int64_t graph_changes;
    volatile int64_t server_gone;
} rt_state;

int rt_xrun(void *arg)
{
    ((rt_state *)arg)->xrun_count++;
    return 0;
}

int rt_graph_order(void *arg)
{
    ((rt_state *)arg)->graph_changes++;
    return 0;
}

void rt_shutdown(void *arg)
{
    ((rt_state *)arg)->server_gone = 1;
}

static int64_t now_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void update_offset(rt_state *s)
{
    if (!s->clock_raw) {
        s->offset_ns = 0.0;
        s->have_offset = 1;
        return;
    }
    if (s->have_offset && (s->cycles & 15))
        return;                 /* it moves by ppm: every 16 cycles is plenty */
    int64_t a = now_ns(CLOCK_MONOTONIC);
    int64_t r = now_ns(CLOCK_MONOTONIC_RAW);
    int64_t b = now_ns(CLOCK_MONOTONIC);
    if (b - a > 4000)
        return;                 /* preempted between the reads */
    double sample = (double)((a - r) + (b - a) / 2);
    if (!s->have_offset) {
        s->offset_ns = sample;
        s->have_offset = 1;
    } else {
        s->offset_ns += 0.02 * (sample - s->offset_ns);
    }
}

/* Frame of engine time t in a block starting (sounding) at block_time: -1 if before it. */
static int64_t frame_of(double t, double block_time, double frame_s, int64_t *late, double *late_s)
{
    double where = (t - block_time) / frame_s;
    if (where <= -0.5) {
        *late = 1;
        *late_s = -where * frame_s;
        return 0;
    }
    *late = 0;
    return (int64_t)(where + 0.5);
}

/* Cut the voices of a choke group sounding before frame `offset`: each fades out from that frame. */
static void choke(rt_state *s, int64_t group, int64_t offset)
{
    for (int64_t v = 0; v < s->voices; v++) {
        if (s->v_group[v] != group || s->v_pos[v] >= s->v_end[v]) continue;
        int64_t at = s->v_pos[v] + offset;     /* the bank index the voice reads at that frame */
        if (at <= s->v_start[v]) continue;     /* struck on the same frame (or later): both sound */
        int64_t cut = at + s->choke_frames;
        if (cut < s->v_fade_end[v]) s->v_fade_end[v] = cut;
        if (cut < s->v_end[v]) s->v_end[v] = cut;
    }
}

static void start_voice(rt_state *s, int64_t start, int64_t end, float gain, int64_t offset, int64_t group)
{
    int64_t k = -1;
    for (int64_t v = 0; v < s->voices; v++)
        if (s->v_pos[v] >= s->v_end[v]) { k = v; break; }
    if (k < 0) {
        k = 0;
        for (int64_t v = 1; v < s->voices; v++)
            if (s->v_age[v] < s->v_age[k]) k = v;
        s->stolen++;
    }
    s->v_start[k] = start;
    s->v_end[k] = end;
    s->v_pos[k] = start - offset;
    s->v_gain[k] = gain;
    s->v_group[k] = group;
    s->v_fade_end[k] = NO_FADE;
    s->v_age[k] = ++s->started;
}

static void render(rt_state *s, float *out, nframes_t n, double block_time)
{
    int64_t read = s->audio_read, written = s->hits_written;
    BARRIER();
    while (read < written) {
        const hit_t *h = &s->hits[read % s->hit_capacity];
        if ((h->time - block_time) / s->frame_s >= n - 0.5)
            break;              /* in time order: the rest are for later cycles */
        int64_t late;
        double late_s;
        int64_t offset = frame_of(h->time, block_time, s->frame_s, &late, &late_s);
        if (late) {
            s->late++;
            if (late_s > s->late_max_s) s->late_max_s = late_s;
        }
        int64_t c = h->cls, v = h->vel;
        if (c >= 0 && c < N_CLASSES && v >= 1 && v <= 127) {
            /* the note's own sound, else its class's; its choke group cuts what it should */
            int64_t pitch = (h->note >= 0 && h->note < 16 * 128) ? (h->note & 127) : s->pitches[c];
            int64_t snd = s->sound_of_pitch[pitch] >= 0 ? s->sound_of_pitch[pitch] : c;
            int64_t group = s->choke_of_pitch[pitch];
            if (group > 0) choke(s, group, offset);
            int64_t k = s->layer_of[snd * 128 + v];
            start_voice(s, s->starts[snd * s->layers + k], s->ends[snd * s->layers + k], s->gain_of[snd * 128 + v],
                        offset, group);
            s->played++;
        }
        read++;
    }
    BARRIER();
    s->audio_read = read;
    memset(out, 0, n * sizeof(float));
    for (int64_t v = 0; v < s->voices; v++) {
        int64_t pos = s->v_pos[v], end = s->v_end[v];
        if (pos >= end) continue;
        int64_t lo = pos > s->v_start[v] ? pos : s->v_start[v];
        int64_t hi = pos + (int64_t)n < end ? pos + (int64_t)n : end;
        const float g = s->v_gain[v];
        const float *src = s->bank;
        int64_t fade_end = s->v_fade_end[v];
        if (fade_end - s->choke_frames < hi) {  /* choked: a linear fade to fade_end */
            const float step = 1.0f / (float)s->choke_frames;
            for (int64_t i = lo; i < hi; i++) {
                float e = (float)(fade_end - i) * step;
                out[i - pos] += g * (e < 1.0f ? e : 1.0f) * src[i];
            }
        } else {
            for (int64_t i = lo; i < hi; i++)
                out[i - pos] += g * src[i];
        }
        s->v_pos[v] = pos + n < end ? pos + n : end;
    }
}

static int write_midi(rt_state *s, void *buffer, int64_t offset, unsigned char a, unsigned char b, unsigned char c, size_t size)
{
    unsigned char data[3] = {a, b, c};
    if (s->midi_write(buffer, (nframes_t)offset, data, size) != 0) {
        s->midi_errors++;
        return 0;
    }
    return 1;
}

static int64_t next_note_off(rt_state *s)
{
    int64_t c = -1;
    for (int64_t k = 0; k < N_CLASSES; k++)
        if (s->off_at[k] >= 0 && (c < 0 || s->off_at[k] < s->off_at[c])) c = k;
    return c;
}

/* Note-offs due before frame `upto`, in time order, never before `*last`. */
static void note_offs(rt_state *s, void *buffer, double shifted, int64_t upto, int64_t *last)
{
    for (;;) {
        int64_t c = next_note_off(s);
        if (c < 0) return;
        double where = (s->off_at[c] - shifted) / s->frame_s;
        if (where >= upto - 0.5) return;
        int64_t offset = where > -0.5 ? (int64_t)(where + 0.5) : 0;
        if (offset < *last) offset = *last;
        write_midi(s, buffer, offset, (unsigned char)(0x80 | (s->off_note[c] >> 7)),
                   (unsigned char)(s->off_note[c] & 127), 0, 3);
        *last = offset;
        s->off_at[c] = -1.0;
    }
}

static void midi_notes(rt_state *s, void *buffer, nframes_t n, double block_time)
{
    double shifted = block_time + s->midi_latency_s;
    int64_t read = s->midi_read, written = s->hits_written, last = 0;
    BARRIER();
    while (read < written) {
        const hit_t *h = &s->hits[read % s->hit_capacity];
        if ((h->time - shifted) / s->frame_s >= n - 0.5)
            break;
        int64_t late;
        double late_s;
        int64_t offset = frame_of(h->time, shifted, s->frame_s, &late, &late_s);
        if (late) s->midi_late++;
        if (offset < last) offset = last;
        note_offs(s, buffer, shifted, offset, &last);
        int64_t c = h->cls, v = h->vel;
        if (c >= 0 && c < N_CLASSES && v >= 1 && v <= 127) {
            int64_t note = (h->note >= 0 && h->note < 16 * 128) ? h->note : 9 * 128 + s->pitches[c];
            if (s->off_at[c] >= 0)      /* still on: end it first */
                write_midi(s, buffer, offset, (unsigned char)(0x80 | (s->off_note[c] >> 7)),
                           (unsigned char)(s->off_note[c] & 127), 0, 3);
            write_midi(s, buffer, offset, (unsigned char)(0x90 | (note >> 7)), (unsigned char)(note & 127),
                       (unsigned char)v, 3);
            last = offset;
            s->off_at[c] = shifted + offset * s->frame_s + s->gate_s;
            s->off_note[c] = note;
            s->midi_sent++;
        }
        read++;
    }
    BARRIER();
    s->midi_read = read;
    note_offs(s, buffer, shifted, n, &last);
}

static void midi_clock(rt_state *s, void *buffer, nframes_t n, double block_time)
{
    if (!s->clock_ready || s->clock_stopped) return;
    int64_t last = (int64_t)n - 1;
    if (!s->clock_started) {
        double where = (s->clock_start_at - block_time) / s->frame_s;
        if (where >= n - 0.5) return;
        int64_t offset = where > -0.5 ? (int64_t)(where + 0.5) : 0;
        if (offset > last) offset = last;
        write_midi(s, buffer, offset, 0xF2, 0, 0, 3);    /* song position 0 */
        write_midi(s, buffer, offset, 0xFA, 0, 0, 1);    /* start */
        s->clock_started = 1;
    }
    if (s->clock_stop) {
        write_midi(s, buffer, 0, 0xFC, 0, 0, 1);
        s->clock_stopped = 1;
        return;
    }
    int64_t k = s->next_tick, prev = 0;
    while (k < s->tick_count) {
        double where = (s->ticks[k] - block_time) / s->frame_s;
        if (where >= n - 0.5) break;
        int64_t offset = where > -0.5 ? (int64_t)(where + 0.5) : 0;
        if (offset < prev) offset = prev;
        if (offset > last) offset = last;
        write_midi(s, buffer, offset, 0xF8, 0, 0, 1);
        prev = offset;
        k++;
        s->ticks_sent++;
    }
    s->next_tick = k;
}

static void keep_input(rt_state *s, const float *in, const float *drums, nframes_t n, double played_at,
                       nframes_t frame0, uint64_t usecs)
{
    int64_t w = s->ring_written, cap = s->ring_frames;
    for (nframes_t i = 0; i < n; i++) {
        int64_t k = (w + i) % cap;
        s->in_ring[k] = in[i];
        s->drum_ring[k] = drums ? drums[i] : 0.0f;
    }
    double *row = &s->cycle_ring[CYCLE_COLUMNS * (s->cycles_written % s->cycle_capacity)];
    row[0] = (double)w;
    row[1] = played_at;
    row[2] = s->frame_s;
    row[3] = (double)frame0;
    row[4] = (double)usecs;
    BARRIER();
    s->ring_written = w + n;
    s->cycles_written++;
}

/* Keep the messages of a MIDI input buffer in a ring (system messages only: a clock follower's input). */
static void read_midi(rt_state *s, void *buffer, int system_only, double *times, int64_t *cycles,
                      unsigned char *bytes, int64_t capacity, volatile int64_t *written)
{
    uint32_t count = s->midi_count(buffer);
    midi_event_t ev;
    for (uint32_t i = 0; i < count; i++) {
        if (s->midi_get(&ev, buffer, i) != 0) break;
        if (ev.size < 1 || ev.size > 3 || (system_only && ev.buffer[0] < 0xF0)) continue;
        int64_t k = *written % capacity;
        times[k] = s->cycle_time + ev.time * s->frame_s;
        if (cycles) cycles[k] = s->cycles;
        unsigned char *b = &bytes[4 * k];
        b[0] = (unsigned char)ev.size;
        for (size_t j = 0; j < 3; j++) b[1 + j] = j < ev.size ? ev.buffer[j] : 0;
        BARRIER();
        (*written)++;
    }
}

int rt_process(nframes_t n, void *arg)
{
    rt_state *s = (rt_state *)arg;
    int64_t enter = now_ns(CLOCK_MONOTONIC);
    nframes_t frame0 = 0;
    uint64_t usecs = 0, next_usecs = 0;
    float period_usecs = 0;
    s->cycle_times(s->client, &frame0, &usecs, &next_usecs, &period_usecs);
    s->cycle_frame = frame0;
    s->frame_s = next_usecs > usecs ? (double)(next_usecs - usecs) * 1e-6 / n : 1.0 / (double)s->rate;
    update_offset(s);
    int timed = s->have_origin && s->have_offset;
    if (timed)
        s->cycle_time = ((double)usecs * 1000.0 + s->offset_ns) * 1e-9 - s->origin;

    float *drums = NULL;
    if (s->out_port[0]) {
        drums = (float *)s->get_buffer(s->out_port[0], n);
        if (timed) {
            /* frame 0 sounds after JACK's playback latency and the calibrated extra: hits go that much earlier */
            double sounding_at = s->cycle_time + s->playback_latency * s->frame_s + s->output_latency_s;
            render(s, drums, n, sounding_at);
        } else {
            memset(drums, 0, n * sizeof(float));
        }
        if (s->out_port[1])
            memcpy(s->get_buffer(s->out_port[1], n), drums, n * sizeof(float));
    }
    if (s->midi_port) {
        void *buffer = s->get_buffer(s->midi_port, n);
        s->midi_clear(buffer);
        if (timed)
            midi_notes(s, buffer, n, s->cycle_time + s->midi_playback_latency * s->frame_s);
    }
    if (s->clock_port) {
        void *buffer = s->get_buffer(s->clock_port, n);
        s->midi_clear(buffer);
        if (timed)
            midi_clock(s, buffer, n, s->cycle_time + s->midi_playback_latency * s->frame_s);
    }
    if (s->clock_in_port && timed)
        read_midi(s, s->get_buffer(s->clock_in_port, n), 1, s->clock_in_times, NULL, s->clock_in_bytes,
                  s->clock_in_capacity, &s->clock_in_written);
    if (s->midi_in_port && timed)
        read_midi(s, s->get_buffer(s->midi_in_port, n), 0, s->midi_in_times, s->midi_in_cycles, s->midi_in_bytes,
                  s->midi_in_capacity, &s->midi_in_written);
    if (s->in_port && timed) {
        const float *in = (const float *)s->get_buffer(s->in_port, n);
        keep_input(s, in, drums, n, s->cycle_time - s->capture_latency * s->frame_s - s->input_latency_s,
                   frame0, usecs);
    }

    int64_t k = s->cycles % s->cost_capacity;
    s->cost_ns[k] = now_ns(CLOCK_MONOTONIC) - enter;
    int16_t sounding = 0;
    for (int64_t v = 0; v < s->voices; v++)
        sounding += s->v_pos[v] < s->v_end[v];
    s->sounding[k] = sounding;
    if (s->cycle_frames)
        s->cycle_frames[k] = (int64_t)frame0;
    if (s->cycle_starts) {
        s->cycle_starts[k] = timed ? s->cycle_time : NAN;
        s->cycle_woke[k] = timed ? (double)enter * 1e-9 - s->origin : NAN;
    }
    BARRIER();
    s->cycles++;
    return 0;
}

/* The size of rt_state, so Python can check its mirror of the struct. */
size_t rt_state_size(void) { return sizeof(rt_state); }
