//! A small pool of helper threads, started once, that share a caller's work by chunks.
//!
//! `std::thread::scope` starts threads per call and joins them all: on a loaded host a
//! started thread may wait milliseconds for a core, and the call waits for it, even when
//! the caller could have done the work in that time. Here the caller and the helpers claim
//! chunks from one counter; the caller returns once every chunk is done, so a helper that
//! wakes late finds nothing left and costs the caller nothing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// One call's chunks, claimed one at a time by whoever is free.
struct Job {
    next: AtomicUsize,
    done: AtomicUsize,
    chunks: usize,
    panicked: AtomicBool,
    /// The caller's work for one chunk. Valid while the caller waits in `run`: it is
    /// called only for a claimed chunk below `chunks`, and `run` returns only once every
    /// such chunk is done, after which no claim succeeds.
    work: *const (dyn Fn(usize) + Sync + 'static),
}

// SAFETY: `work` points to a `Sync` closure, used only as `Job::work` says.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    /// Claims and does chunks until none is left.
    fn help(&self) {
        loop {
            let c = self.next.fetch_add(1, Ordering::Relaxed);
            if c >= self.chunks {
                return;
            }
            // SAFETY: chunk `c` is claimed and below `chunks`: its caller is waiting (`work`).
            let work = unsafe { &*self.work };
            if catch_unwind(AssertUnwindSafe(|| work(c))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

struct Pool {
    /// The number of jobs published so far, and the one in flight.
    state: Mutex<(u64, Option<Arc<Job>>)>,
    wake: Condvar,
}

/// Starts the pool's helpers now (`Forest::new` does), so that the first call does not wait
/// for their start.
pub(crate) fn start() {
    pool();
}

/// The pool: one helper a core beyond the first, started on first use.
fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            state: Mutex::new((0, None)),
            wake: Condvar::new(),
        }));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for _ in 1..cores.min(crate::MAX_THREADS) {
            // A helper that cannot start leaves its share to the others and the caller.
            let _ = std::thread::Builder::new()
                .name("tree-eval".into())
                .spawn(move || helper(pool));
        }
        pool
    })
}

fn helper(pool: &'static Pool) {
    let mut seen = 0;
    loop {
        let job = {
            let mut s = pool.state.lock().unwrap_or_else(|e| e.into_inner());
            while s.0 == seen {
                s = pool.wake.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            seen = s.0;
            s.1.clone()
        };
        if let Some(job) = job {
            job.help();
        }
    }
}

/// `work(c)` for every chunk `c` in `0..chunks`, on this thread and up to `threads - 1` of
/// the pool's helpers (fewer where the pool has fewer, or another call has them); returns
/// once all are done. Each chunk is done exactly once, by one thread.
pub(crate) fn run(chunks: usize, threads: usize, work: &(dyn Fn(usize) + Sync)) {
    if threads <= 1 || chunks <= 1 {
        (0..chunks).for_each(work);
        return;
    }
    let pool = pool();
    // SAFETY: only the lifetime is erased; `Job::work` says why the pointer stays valid.
    let erased: *const (dyn Fn(usize) + Sync + 'static) =
        unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), _>(work) };
    let job = Arc::new(Job {
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        chunks,
        panicked: AtomicBool::new(false),
        work: erased,
    });
    let published = {
        let mut s = pool.state.lock().unwrap_or_else(|e| e.into_inner());
        let free = s.1.is_none();
        if free {
            s.0 += 1;
            s.1 = Some(job.clone());
        }
        free
    };
    if published {
        for _ in 1..threads {
            pool.wake.notify_one();
        }
    }
    job.help();
    // Helpers still on a chunk they claimed: at most one chunk each.
    while job.done.load(Ordering::Acquire) < chunks {
        std::thread::yield_now();
    }
    if published {
        pool.state.lock().unwrap_or_else(|e| e.into_inner()).1 = None;
    }
    if job.panicked.load(Ordering::Relaxed) {
        panic!("a chunk's work panicked on a helper thread");
    }
}
