//! What counting a request costs on the hot path (`Metrics::http_request`
//! for a series already seen: a cache lookup without allocation, a counter
//! increment and a histogram sample), and what a scrape of `/metrics` costs.

use std::hint::black_box;
use std::time::Duration;

use axum::http::StatusCode;
use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::metrics::Metrics;

fn count_request(c: &mut Criterion) {
    let metrics = Metrics::new().expect("metrics");
    let elapsed = Duration::from_micros(40);
    c.bench_function("http_request, series seen before", |b| {
        b.iter(|| {
            metrics.http_request(
                black_box("GET"),
                black_box("/v1/verify"),
                StatusCode::OK,
                elapsed,
            );
        });
    });
    // 200 routes × statuses: a realistic number of series, rendered.
    for i in 0..200 {
        metrics.http_request("GET", &format!("/v1/route{i}"), StatusCode::OK, elapsed);
    }
    c.bench_function("render /metrics, 200 series", |b| {
        b.iter(|| black_box(metrics.render(gatehouse::metrics::Gauges::default())));
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = count_request
}
criterion_main!(benches);
