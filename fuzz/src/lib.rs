//! What the fuzz targets share: a global allocator that turns an allocation out of proportion
//! to any input into a crash libFuzzer records, and the transfer syntaxes inputs choose from.
//!
//! libFuzzer's own `-malloc_limit_mb` needs a sanitizer's allocator hooks; the targets are
//! built without a sanitizer (the code under test forbids `unsafe`), so the bound is here.
//! `-rss_limit_mb=512` still catches memory that grows by many small allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Largest single allocation: inputs are at most a few hundred KiB and every limit the targets
/// configure (inflated data sets, PDUs, HL7 messages) is 16 MiB or less.
pub const MAX_ALLOCATION: usize = 128 << 20;
/// Most memory live at once through Rust's allocator.
pub const MAX_LIVE: usize = 512 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static TRIPPED: AtomicBool = AtomicBool::new(false);

/// System allocator with the two bounds above; past one it aborts, which libFuzzer reports
/// as a crash with the input that caused it.
pub struct BoundedAllocator;

/// Aborts unless an allocation of `size` bytes, adding `growth` to what is live, is within
/// the bounds.
fn admit(size: usize, growth: usize) {
    let live = LIVE.load(Ordering::Relaxed);
    if size > MAX_ALLOCATION || live.saturating_add(growth) > MAX_LIVE {
        if !TRIPPED.swap(true, Ordering::Relaxed) {
            // Formatting into stderr allocates nothing.
            eprintln!(
                "==fuzz== allocation of {size} bytes with {live} live: out of proportion to the input (bounds {MAX_ALLOCATION} / {MAX_LIVE})"
            );
        }
        std::process::abort();
    }
}

// SAFETY: every call forwards to `System` with the caller's layout; the counters only observe.
unsafe impl GlobalAlloc for BoundedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        admit(layout.size(), layout.size());
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        admit(layout.size(), layout.size());
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        admit(new_size, new_size.saturating_sub(layout.size()));
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

/// Transfer syntaxes a data set input is read in, chosen by its first byte: the three
/// uncompressed ones, deflated explicit VR little endian, and encapsulated ones (explicit VR
/// little endian headers, pixel data in fragments).
pub const TRANSFER_SYNTAXES: [&str; 8] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.90",
];

/// Splits an input into the transfer syntax its first byte names and the data set after it.
pub fn transfer_syntax_and_data(data: &[u8]) -> Option<(&'static str, &[u8])> {
    let (first, rest) = data.split_first()?;
    Some((
        TRANSFER_SYNTAXES[usize::from(*first) % TRANSFER_SYNTAXES.len()],
        rest,
    ))
}

/// Limits for inputs of fuzzing size: small enough that a bomb is refused quickly, large
/// enough for every seed.
pub fn limits() -> pacs_dimse::dataset_check::Limits {
    pacs_dimse::dataset_check::Limits {
        max_inflated: 16 << 20,
        max_header: 8 << 20,
    }
}
