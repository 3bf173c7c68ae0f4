// Run-time services of the kernels (declared in common.hpp), compiled once for the baseline
// instruction set: scratch memory, the thread clamp and pool, fork safety.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>

#include "common.hpp"

#if FASTLOSS_OPENMP
#include <omp.h>
#endif
#if FASTLOSS_OPENMP && !defined(_WIN32)
#include <pthread.h>
#include <signal.h>
#endif
#if FASTLOSS_OPENMP && defined(__linux__)
#include <climits>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fl {

// ---------------------------------------------------------------------------------------
// Scratch memory
static std::atomic<long> pending_alloc_failures{0};

void fail_allocations(long k) { pending_alloc_failures.store(k); }

void* scratch_alloc(std::size_t bytes) {
    if (pending_alloc_failures.load(std::memory_order_relaxed) > 0 &&
        pending_alloc_failures.fetch_sub(1) > 0)
        throw std::bad_alloc();
    void* p = std::malloc(bytes);
    if (!p) throw std::bad_alloc();
    return p;
}

// ---------------------------------------------------------------------------------------
// Threads: the one clamp every parallel call goes through (team_size): never more threads
// than CPUs this process may run on (omp_get_num_procs: the affinity mask at start-up): more
// threads cannot do more work, and OMP_NUM_THREADS=3000 or n_threads=1024 would otherwise
// start that many. A thread the OS refuses (an address-space or process limit) means fewer
// helpers, never a failed call (run_units). Results do not depend on the thread count
// (fixed blocks), only the speed does.
int cpu_limit() {
#if FASTLOSS_OPENMP
    static const int procs = std::max(1, omp_get_num_procs());
    return procs;
#else
    return 1;
#endif
}

int omp_default_threads() {
#if FASTLOSS_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int team_size(int wanted) { return std::min(std::max(wanted, 1), cpu_limit()); }

// ---------------------------------------------------------------------------------------
// The work-claiming pool (run_units, declared in common.hpp).
//
// Why not an OpenMP parallel region: a region ends at a barrier, so its calling thread waits
// for every thread of the team, including one the OS has not scheduled yet. On a busy
// machine (2 cores, 2 other busy processes) that made mse_loss_grad at 1e5 float32 take
// 14.9 ms with 2 threads against 62.7 us with one (`python -m fastloss bench --load 2`).
// Here the calling thread claims units like any helper and waits only for units a helper has
// already claimed (and so is computing): a helper that is not running takes no unit, and the
// caller computes everything itself at serial speed. OpenMP still gives the default thread
// count (omp_get_max_threads: OMP_NUM_THREADS, threadpoolctl) and the `omp simd` loops.
//
// One job at a time, described by a 64-bit word changed only by atomic operations:
//   bits 48-63 generation (a new one per job), 40-47 seats (helpers that may still join),
//   20-39 next unit to claim, 0-19 number of units.
// A helper joins a job by taking a seat and claims units by advancing `next`, each with a
// compare-and-swap on the whole word, so a claim succeeds only in the job it saw, and only
// while that job has units left (a thread claims up to 8 at once, single ones near the end).
// The job's function and context are read after a successful claim (the job cannot end
// before the claimed units are done), so a helper never runs a unit of a finished job.
// Helpers spin after their last unit (back-to-back calls, as a training loop makes, find them
// awake), then sleep; a new job wakes sleeping helpers, and the caller starts on it at once.
// Results: each unit computes fixed blocks whoever runs it (drivers.hpp), so bits are those
// of one thread. Tests: tests/runtime/test_adv_threads.py (helpers that never run, thread
// limits, fork, signals, many callers), the ThreadSanitizer build of tests/c_level.
#if FASTLOSS_OPENMP
namespace {

constexpr int NEXT_SHIFT = 20, SEAT_SHIFT = 40, GEN_SHIFT = 48;
constexpr uint64_t FIELD = (uint64_t(1) << 20) - 1;
constexpr uint64_t ONE_SEAT = uint64_t(1) << SEAT_SHIFT, ONE_NEXT = uint64_t(1) << NEXT_SHIFT;
static_assert(MAX_UNITS == idx(FIELD), "MAX_UNITS is the width of the job word's unit fields");

inline idx units_of(uint64_t w) { return idx(w & FIELD); }
inline idx next_of(uint64_t w) { return idx((w >> NEXT_SHIFT) & FIELD); }
inline int seats_of(uint64_t w) { return int((w >> SEAT_SHIFT) & 0xff); }
inline uint64_t gen_of(uint64_t w) { return w >> GEN_SHIFT; }
inline bool claimable(uint64_t w) { return next_of(w) < units_of(w); }
inline bool joinable(uint64_t w) { return seats_of(w) > 0 && claimable(w); }

// A helper that ran out of work spins SPIN_NS, then spins yielding its CPU to any other
// runnable thread until YIELD_NS, then sleeps (futex). Measured on this 2-core VM: waking a
// sleeping thread takes tens to hundreds of microseconds here, so helpers that slept after
// 0.1 ms lost most of the parallel speed-up of calls 1e5-1e6 elements apart in the bench
// (mse_loss 1e6 float32: 0.99x one thread's time against 0.52x with GNU OpenMP, whose idle
// threads spin for milliseconds); with 1 ms they keep it (0.44x), and a yielding spinner
// costs a busy machine little (bench --load 2, mse, BCE with logits and cross-entropy,
// 1e3-1e7 float32: no row above 1.26x one thread's time).
constexpr long SPIN_NS = 50000;
constexpr long YIELD_NS = 1000000;
// A sleeping helper is woken only for a job of at least WAKE_UNITS units: the wake-up (a
// system call) cost the caller of a 3-block call as much again as the call (bench --load 2:
// mse_loss 1e4 float32 at 3.5x one thread's time), and the helper would come too late to
// help. Awake helpers join any job.
constexpr idx WAKE_UNITS = 16;
// Back-off: when the caller, out of units, waited longer than LONG_WAIT_NS for a helper's
// claimed units (a helper the OS preempted mid-claim on a busy machine: it then waits for
// that helper's next time slice, milliseconds), the calls of the next BACKOFF_MIN_NS run on
// their calling thread alone, twice as long after each such wait in a row (at most
// BACKOFF_MAX_NS); a parallel call without one ends it. Measured with bench --load 2, every
// loss, 1e3-1e7, with the paired 1- vs 2-thread ratio of the bench's Threads section: no
// 2-thread row of 1e4 elements or more above 1.38x (float32) or 1.24x (float64). (Before it,
// with a noisier ratio of row medians, 18 of 110 float32 rows were above 1.5x; with it, 10.)
constexpr long LONG_WAIT_NS = 100000;
constexpr long BACKOFF_MIN_NS = 2000000;
constexpr long BACKOFF_MAX_NS = 200000000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// The fields the threads write during a job each on their own cache line: a claim (word)
// does not move the line a finished unit is counted on (done), nor the sleep word.
struct Pool {
    alignas(64) std::atomic<uint64_t> word{0};
    std::atomic<UnitFn> unit{nullptr};
    std::atomic<void*> ctx{nullptr};
    alignas(64) std::atomic<idx> done{0};  // units helpers finished in the current job
    alignas(64) std::atomic<int> sleepers{0};  // helpers asleep, or about to be
    std::atomic<uint32_t> epoch{0};            // incremented when a job is published (the sleep word)
    alignas(64) std::atomic<bool> busy{false}; // a caller holds the pool
    std::atomic<bool> held{false};             // test hook: helpers do not join
    std::atomic<long> helper_units{0};         // test hook: units run by helpers
#ifndef __linux__
    std::mutex m;
    std::condition_variable cv;
#endif
    // Changed only by the thread holding busy:
    int helpers = 0;     // helper threads started
    bool refused = false;  // the OS refused a thread: no further attempts
    uint64_t gen = 0;    // the generation last published
    long backoff_ns = 0;   // the current back-off (0: none)
    std::chrono::steady_clock::time_point serial_until{};  // calls before this run serially
};

// Claim up to this many units at once, and at most an eighth of what is left, so the last
// claims are single units (a thread preempted holding a claim holds back little).
constexpr idx MAX_CLAIM = 8;
inline idx claim_size(uint64_t w) {
    return std::min(MAX_CLAIM, std::max<idx>(1, (units_of(w) - next_of(w)) / 8));
}

// Claim units of the job in w (refreshed on failure) until none is left or the generation
// changes, and run them; returns how many this thread ran. A helper reads the job's function
// and context after each successful claim (published with the job, acquired by the
// exchange; the job cannot end before the claimed units are counted in done).
template <bool HELPER>
idx claim_and_run(Pool& p, uint64_t w, uint64_t gen, UnitFn unit, void* ctx) {
    idx ran = 0;
    while (gen_of(w) == gen && claimable(w)) {
        const idx k = claim_size(w);  // at least 1, at most what is left
        if (!p.word.compare_exchange_weak(w, w + uint64_t(k) * ONE_NEXT, std::memory_order_acq_rel,
                                          std::memory_order_acquire))
            continue;
        if (HELPER) {
            unit = p.unit.load(std::memory_order_relaxed);
            ctx = p.ctx.load(std::memory_order_relaxed);
        }
        for (idx u = next_of(w), end = u + k; u < end; ++u) unit(ctx, u);
        ran += k;
        if (HELPER) p.done.fetch_add(k, std::memory_order_release);
        w = p.word.load(std::memory_order_acquire);
    }
    return ran;
}

// Never destroyed: detached helpers may still wait on it while the process exits.
Pool& the_pool() {
    static Pool* pool = new Pool();
    return *pool;
}

// Sleeping and waking: a futex on the epoch word where there is one (Linux: no lock, so
// a caller never blocks on a helper going to sleep), a condition variable elsewhere.
#ifdef __linux__
void sleep_on(Pool& p, uint32_t e) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&p.epoch), FUTEX_WAIT_PRIVATE, e, nullptr, nullptr, 0);
}
void wake_all(Pool& p) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&p.epoch), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}
#else
void sleep_on(Pool& p, uint32_t e) {
    std::unique_lock<std::mutex> lock(p.m);
    if (p.epoch.load() == e) p.cv.wait(lock);
}
void wake_all(Pool& p) {
    { std::lock_guard<std::mutex> lock(p.m); }
    p.cv.notify_all();
}
#endif

// Until a job with a free seat and units left is published: spin (SPIN_NS), then spin
// yielding the CPU to any other runnable thread (YIELD_NS), then sleep.
void wait_for_job(Pool& p) {
    const auto start = std::chrono::steady_clock::now();
    const auto spin_until = start + std::chrono::nanoseconds(SPIN_NS);
    const auto yield_until = start + std::chrono::nanoseconds(YIELD_NS);
    for (unsigned i = 1;; ++i) {
        if (joinable(p.word.load(std::memory_order_relaxed))) return;
        if (i % 64 == 0) {
            const auto now = std::chrono::steady_clock::now();
            if (now >= yield_until) break;
            if (now >= spin_until) std::this_thread::yield();
        }
        cpu_relax();
    }
    // Sleep until the epoch moves. The helper increments sleepers, then reads epoch and word;
    // the caller stores word, increments epoch, then reads sleepers (all sequentially
    // consistent): either the helper sees the new job, or the caller sees a sleeper and
    // wakes it (a wait on an epoch that has moved returns at once).
    p.sleepers.fetch_add(1);
    for (;;) {
        const uint32_t e = p.epoch.load();
        if (joinable(p.word.load())) break;
        sleep_on(p, e);
    }
    p.sleepers.fetch_sub(1);
}

void helper_main(Pool* pool) {
    Pool& p = *pool;
    for (;;) {
        uint64_t w = p.word.load(std::memory_order_acquire);
        if (!joinable(w)) {
            wait_for_job(p);
            continue;
        }
        if (p.held.load(std::memory_order_relaxed)) {
            std::this_thread::sleep_for(std::chrono::microseconds(200));
            continue;
        }
        if (!p.word.compare_exchange_weak(w, w - ONE_SEAT, std::memory_order_acq_rel, std::memory_order_relaxed))
            continue;
        const idx ran = claim_and_run<true>(p, w - ONE_SEAT, gen_of(w), nullptr, nullptr);
        p.helper_units.fetch_add(ran, std::memory_order_relaxed);
    }
}

// Start helpers until there are `wanted` (or the OS refuses one). Helpers block every
// signal: a process's signals go to its own threads, never to a kernel's helper.
void grow(Pool& p, int wanted) {
    if (p.helpers >= wanted || p.refused) return;
#ifndef _WIN32
    sigset_t all, old;
    sigfillset(&all);
    const bool masked = pthread_sigmask(SIG_SETMASK, &all, &old) == 0;
#endif
    try {
        while (p.helpers < wanted) {
            std::thread(helper_main, &p).detach();
            ++p.helpers;
        }
    } catch (...) {  // std::system_error (no thread), std::bad_alloc
        p.refused = true;
    }
#ifndef _WIN32
    if (masked) pthread_sigmask(SIG_SETMASK, &old, nullptr);
#endif
}

}  // namespace
#endif  // FASTLOSS_OPENMP

#if FASTLOSS_OPENMP
void hold_helpers(bool on) { the_pool().held.store(on); }
long helper_units() { return the_pool().helper_units.load(); }
#else
void hold_helpers(bool) {}
long helper_units() { return 0; }
#endif

void run_units(idx nunits, int n_threads, UnitFn unit, void* ctx) {
#if FASTLOSS_OPENMP
    Pool& p = the_pool();
    if (nunits > 1 && n_threads > 1 && !in_forked_child() && nunits <= MAX_UNITS &&
        !p.busy.exchange(true, std::memory_order_acquire)) {
        const int seats = std::min(team_size(n_threads), 256) - 1;  // the job word holds 8 bits of seats
        grow(p, seats);
        if (p.helpers > 0 && (p.backoff_ns == 0 || std::chrono::steady_clock::now() >= p.serial_until)) {
            p.unit.store(unit, std::memory_order_relaxed);
            p.ctx.store(ctx, std::memory_order_relaxed);
            p.done.store(0, std::memory_order_relaxed);
            p.gen = (p.gen + 1) & 0xffff;
            const uint64_t job = (p.gen << GEN_SHIFT) | (uint64_t(std::min(seats, p.helpers)) << SEAT_SHIFT) |
                                 uint64_t(nunits);
            p.word.store(job);  // sequentially consistent (publishes unit, ctx, done)
            p.epoch.fetch_add(1);
            if (nunits >= WAKE_UNITS && p.sleepers.load() > 0) wake_all(p);
            // Claim units like a helper; then wait only for the units helpers claimed.
            const idx mine = claim_and_run<false>(p, job, p.gen, unit, ctx);
            long waited_ns = 0;
            if (p.done.load(std::memory_order_acquire) < nunits - mine) {
                const auto t0 = std::chrono::steady_clock::now();
                for (unsigned i = 0; p.done.load(std::memory_order_acquire) < nunits - mine; ++i) {
                    if (i < 4096) cpu_relax();
                    else std::this_thread::yield();  // a claimed unit's helper may need this CPU
                }
                const auto t1 = std::chrono::steady_clock::now();
                waited_ns = (long)std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
                if (waited_ns > LONG_WAIT_NS) {
                    p.backoff_ns = p.backoff_ns ? std::min(2 * p.backoff_ns, BACKOFF_MAX_NS) : BACKOFF_MIN_NS;
                    p.serial_until = t1 + std::chrono::nanoseconds(p.backoff_ns);
                }
            }
            if (waited_ns <= LONG_WAIT_NS) p.backoff_ns = 0;
            p.busy.store(false, std::memory_order_release);
            return;
        }
        p.busy.store(false, std::memory_order_release);
    }
#else
    (void)n_threads;
#endif
    for (idx u = 0; u < nunits; ++u) unit(ctx, u);
}

// ---------------------------------------------------------------------------------------
// Threads after fork. fork copies only the calling thread: a child has none of the pool's
// helpers, and the pool's state (a job in flight, a held mutex) may be mid-change. So, as
// PyTorch does with its OpenMP pool, a forked child runs every kernel on one thread: a
// pthread_atfork child handler (registered when fastloss.kernels is imported, or libfastloss
// loaded) sets forked_child, and the entry points cap their thread count with usable_threads.
// Results are unchanged: they do not depend on the thread count.
static volatile int forked_child = 0;

bool in_forked_child() { return forked_child != 0; }

#if FASTLOSS_OPENMP && !defined(_WIN32)
extern "C" {
static void on_fork_child(void) { forked_child = 1; }
}
int register_atfork() { return pthread_atfork(nullptr, nullptr, on_fork_child); }
#else
int register_atfork() { return 0; }
#endif

}  // namespace fl
