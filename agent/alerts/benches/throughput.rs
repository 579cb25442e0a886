//! Detector throughput (audit records per second) and the memory its state takes for 15
//! users over a year, on a synthetic stream (52 weeks, incidents included).
//!
//! `cargo bench -p wardbox-alerts --bench throughput`. Memory is measured by counting the
//! bytes the allocator holds before the detector exists and after it has read the year.

#![allow(unsafe_code)] // The counting allocator below: a GlobalAlloc impl is unsafe by definition.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use wardbox_alerts::Detector;
use wardbox_alerts::synth::{Family, Scenario, generate, score};

struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout as asked.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    let stream = generate(&Scenario {
        seed: 42,
        weeks: 52,
        incidents_per_kind: 4,
        family: Family::A,
        addresses: false,
        contacts: false,
    });
    let records: Vec<_> = stream.records.iter().map(|r| r.as_record()).collect();

    let before = HELD.load(Ordering::Relaxed);
    let mut detector = Detector::new(&stream.config).expect("valid configuration");
    // The related-record rules' pairs are detector state too (counted in its memory).
    detector.set_relations(stream.relations());
    let mut alerts = Vec::new();
    let start = Instant::now();
    for r in &records {
        alerts.extend(detector.observe(r).expect("readable"));
    }
    let elapsed = start.elapsed();
    let alert_bytes: usize = alerts
        .iter()
        .map(|a| {
            std::mem::size_of_val(a)
                + a.subject.len()
                + a.at.len()
                + a.threshold.len()
                + a.observed.len()
                + a.seqs.len() * 8
        })
        .sum();
    let held = HELD.load(Ordering::Relaxed) - before;

    let per_sec = records.len() as f64 / elapsed.as_secs_f64();
    println!(
        "records: {} over 52 weeks, {} users with state",
        records.len(),
        detector.users()
    );
    println!(
        "throughput: {per_sec:.0} records/s ({:.2} us per record, {:.3} s in all)",
        1e6 / per_sec,
        elapsed.as_secs_f64()
    );
    println!(
        "detector state after a year: {} KiB ({} alerts raised, about {} KiB of them, not counted)",
        (held as usize).saturating_sub(alert_bytes) / 1024,
        alerts.len(),
        alert_bytes / 1024
    );
    let ev = score(&stream, &alerts);
    println!(
        "alerts touching no injected incident: {} ({:.4} per user-week)",
        ev.false_alerts(),
        ev.false_per_user_week(None)
    );
}
