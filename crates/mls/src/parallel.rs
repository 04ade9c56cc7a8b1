//! Independent work spread over the available cores with scoped threads:
//! the signature checks of many KeyPackages or leaves, the HPKE seals of a
//! Welcome or an UpdatePath to thousands of members.

use crate::tree::TreeError;

/// The number of cores, asked once: `available_parallelism` reads the
/// cgroup's CPU quota from files on Linux, tens of microseconds per call
/// (measured: most of a small incremental save).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `items.iter().map(f)` in order, on as many threads as there are cores
/// when there are at least `min_parallel` items (one thread otherwise). A
/// panicking worker is reported as [`TreeError::WorkerPanicked`] (a bug).
pub(crate) fn map<T, R, F>(items: &[T], min_parallel: usize, f: F) -> Result<Vec<R>, TreeError>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let threads = cores();
    if items.len() < min_parallel.max(2) || threads < 2 {
        return Ok(items.iter().map(f).collect());
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            out.extend(h.join().map_err(|_| TreeError::WorkerPanicked)?);
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::map;

    #[test]
    fn keeps_order_serial_and_parallel() {
        let items: Vec<u32> = (0..1000).collect();
        let serial = map(&items, usize::MAX, |x| x * 3).expect("serial");
        let parallel = map(&items, 1, |x| x * 3).expect("parallel");
        let expected: Vec<u32> = items.iter().map(|x| x * 3).collect();
        assert_eq!(serial, expected);
        assert_eq!(parallel, expected);
        assert_eq!(
            map(&[] as &[u32], 1, |x| *x).expect("empty"),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn a_panicking_worker_is_an_error() {
        let items: Vec<u32> = (0..100).collect();
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return;
        }
        let r = map(&items, 1, |x| {
            assert!(*x != 99, "worker panics on purpose");
            *x
        });
        assert!(matches!(r, Err(crate::tree::TreeError::WorkerPanicked)));
    }
}
