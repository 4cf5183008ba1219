//! Work spread over the machine's cores, results in input order.

/// The cores this process may use, asked once: `available_parallelism` reads the cgroup's
/// CPU quota from files on every call, which cost more than a small translation step.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` applied to every item, on up to one thread per core, each thread taking a contiguous run
/// of at least `min_per_thread` items (fewer items run inline: a thread costs more than a few
/// small tasks). The results come back in the order of `items`. A panic in `f` panics the
/// caller, as it would have inline.
pub(crate) fn map_owned<T: Send, R: Send>(
    items: Vec<T>,
    min_per_thread: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let threads = cores().min(items.len() / min_per_thread.max(1)).max(1);
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut runs: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut rest = items.into_iter();
    loop {
        let run: Vec<T> = rest.by_ref().take(per).collect();
        if run.is_empty() {
            break;
        }
        runs.push(run);
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| s.spawn(move || run.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(e) => std::panic::resume_unwind(e),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::map_owned;

    #[test]
    fn results_keep_the_input_order_whatever_the_split() {
        for n in [0, 1, 7, 64, 1000, 1001] {
            let items: Vec<u64> = (0..n).collect();
            for min in [0, 1, 3, 100] {
                let got = map_owned(items.clone(), min, |x| x * 2);
                let want: Vec<u64> = items.iter().map(|x| x * 2).collect();
                assert_eq!(got, want, "n={n} min={min}");
            }
        }
    }

    #[test]
    fn a_panic_in_a_task_reaches_the_caller() {
        let items: Vec<u32> = (0..4096).collect();
        let r = std::panic::catch_unwind(|| {
            map_owned(items, 1, |x| {
                assert!(x != 4000, "task {x} fails");
                x
            })
        });
        assert!(r.is_err());
    }
}
