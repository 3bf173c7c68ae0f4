// Run-time services of the kernels (declared in common.hpp), compiled once for the baseline
// instruction set: scratch memory, the thread clamp, fork safety.
#include <atomic>
#include <new>

#include "common.hpp"

#if FASTLOSS_OPENMP
#include <omp.h>
#endif
#if FASTLOSS_OPENMP && !defined(_WIN32)
#include <pthread.h>
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
// Threads: the one clamp every parallel region goes through (team_size).
//  * Never more threads than CPUs this process may run on (omp_get_num_procs: the affinity
//    mask at start-up): more threads cannot do more work, and OMP_NUM_THREADS=3000 or
//    n_threads=1024 would otherwise start that many.
//  * Never a team the OS has not shown it can create. GNU libgomp ends the process
//    (exit(1)) when pthread_create fails inside a parallel region (an address-space or
//    process limit), so before the first region of a larger team on a calling thread
//    (libgomp keeps one pool of threads per calling thread) the same number of plain threads
//    are created and joined first; if the OS refuses, the team is what it allowed. Results do
//    not depend on the team size (fixed blocks), only the speed does.
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

#if FASTLOSS_OPENMP && !defined(_WIN32)
extern "C" {
static void* fl_probe_thread(void*) { return nullptr; }
}

// How many threads (the caller included, so at least 1) the OS lets this thread start now.
static int creatable_team(int wanted) {
    pthread_attr_t attr;
    bool attr_ok = pthread_attr_init(&attr) == 0;
    // libgomp's helper threads get OMP_STACKSIZE (or GOMP_STACKSIZE) when it is set: probe
    // with the same size. (Its units: a number with an optional B/K/M/G suffix, K default.)
    const char* env = std::getenv("OMP_STACKSIZE");
    if (!env) env = std::getenv("GOMP_STACKSIZE");
    if (attr_ok && env) {
        char* end = nullptr;
        unsigned long long v = std::strtoull(env, &end, 10);
        unsigned long long unit = 1024;
        if (end && *end) {
            const char u = *end | 0x20;
            unit = u == 'b' ? 1 : u == 'k' ? 1024 : u == 'm' ? (1ull << 20) : u == 'g' ? (1ull << 30) : 1024;
        }
        if (v > 0 && v < (1ull << 40)) pthread_attr_setstacksize(&attr, (std::size_t)(v * unit));
    }
    pthread_t threads[64];
    int started = 0;
    const int probe = std::min(wanted - 1, 64);
    while (started < probe &&
           pthread_create(&threads[started], attr_ok ? &attr : nullptr, fl_probe_thread, nullptr) == 0)
        ++started;
    for (int i = 0; i < started; ++i) pthread_join(threads[i], nullptr);
    if (attr_ok) pthread_attr_destroy(&attr);
    return started + 1;
}
#endif

int team_size(int wanted) {
    int n = std::min(std::max(wanted, 1), cpu_limit());
#if FASTLOSS_OPENMP && !defined(_WIN32)
    static thread_local int proven = 1;  // the largest team this thread has started
    if (n > proven) proven = std::max(proven, creatable_team(n));
    n = std::min(n, proven);
#endif
    return n;
}

// ---------------------------------------------------------------------------------------
// OpenMP after fork. GNU libgomp cannot start a parallel region in a child forked after
// the parent ran one: the child waits forever for the parent's thread pool, which fork did
// not copy. So, as PyTorch does, a forked child runs every kernel on one thread: a
// pthread_atfork child handler (registered when fastloss.kernels is imported) sets
// forked_child, and the entry points cap their thread count with usable_threads.
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
