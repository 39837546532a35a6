//! Admission of one request and its release, through the public layer
//! (the admission table is private): a `POST` of protocol 2026-07-28 with
//! its `Mcp-Method` and `Mcp-Name` headers and a peer address goes through `BoundedSessionLayer` to a service that
//! answers at once, and the response (whose body holds the request's
//! units) is dropped. On 1, 2 and 4 threads, each with its own client key
//! ("distinct keys") or all on one ("hot key").
//!
//! `layer_off` is the same layer with no request limit configured: the
//! cost of building the request, deriving its key and the layer's own
//! wrapping. `layer_on` minus `layer_off` is what admission and release
//! cost (`max_requests_in_flight` 1,024 and `_per_client` 32; no rate
//! limit, whose exact window would refuse a loop this fast);
//! `per_client_only` leaves out the global bound.
//!
//! Each iteration is one request per thread; criterion's throughput is in
//! requests.
//!
//! ```text
//! cargo bench --bench request_admission
//! # instructions per request, immune to the machine's load:
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*one_request*' \
//!     target/release/deps/request_admission-* --bench --profile-time 1 'layer_on/distinct_keys/1_'
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use mcp_bounded_session::{BoundedSessionManagerBuilder, BoundedSessionService};
use tower_layer::Layer;
use tower_service::Service;

const THREADS: [usize; 3] = [1, 2, 4];

type HttpResponse = Response<BoxBody<Bytes, Infallible>>;

/// Answers every request at once with an empty body.
#[derive(Clone)]
struct Answer;

impl Service<Request<()>> for Answer {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = std::future::Ready<Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(Empty::new().boxed())))
    }
}

/// The layer with `global` and `per_client` in-flight bounds, if given.
fn service(global: Option<usize>, per_client: Option<usize>) -> BoundedSessionService<Answer> {
    let mut builder = BoundedSessionManagerBuilder::new(100);
    if let Some(n) = global {
        builder = builder.max_requests_in_flight(n);
    }
    if let Some(n) = per_client {
        builder = builder.max_requests_in_flight_per_client(n);
    }
    builder.build().layer().layer(Answer)
}

/// One request from `peer`: admitted, answered, released. The layer's
/// future is ready at its first poll (the inner service answers at once).
/// Never inlined: callgrind counts its instructions per call
/// (`--toggle-collect='*one_request*'`).
#[inline(never)]
fn one_request(service: &mut BoundedSessionService<Answer>, peer: SocketAddr) {
    let request = Request::post("/mcp")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .extension(peer)
        .body(())
        .expect("request");
    let mut context = Context::from_waker(Waker::noop());
    let future = pin!(service.call(request));
    match future.poll(&mut context) {
        Poll::Ready(Ok(response)) => {
            assert!(response.status().is_success(), "{}", response.status());
            // Dropping the response drops its body, which releases the
            // request's units.
            drop(response);
        }
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => panic!("the layer's future was not ready"),
    }
}

fn peer(thread: usize, hot: bool) -> SocketAddr {
    let host = if hot { 0 } else { thread as u8 + 1 };
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, host), 40_000))
}

/// `iters` requests on each of `threads` threads at once; the wall time.
fn run(service: &BoundedSessionService<Answer>, threads: usize, hot: bool, iters: u64) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let (mut service, barrier) = (service.clone(), &barrier);
                scope.spawn(move || {
                    let peer = peer(thread, hot);
                    barrier.wait();
                    for _ in 0..iters {
                        one_request(&mut service, peer);
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for worker in workers {
            worker.join().expect("worker");
        }
        start.elapsed()
    })
}

fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_admission");
    let configs = [
        ("layer_off", None, None),
        ("layer_on", Some(1_024), Some(32)),
        // Without the global bound's one shared counter: how much of the
        // cost, and of the contention between threads, is that counter's.
        ("per_client_only", None, Some(32)),
    ];
    for (name, global, per_client) in configs {
        let service = service(global, per_client);
        for threads in THREADS {
            for (keys, hot) in [("distinct_keys", false), ("hot_key", true)] {
                // One thread on one key is the distinct-keys case; without
                // the global bound only distinct keys are of interest.
                if hot && (threads == 1 || name == "per_client_only") {
                    continue;
                }
                group.throughput(Throughput::Elements(threads as u64));
                group.bench_function(
                    BenchmarkId::new(format!("{name}/{keys}"), format!("{threads}_threads")),
                    |b| b.iter_custom(|iters| run(&service, threads, hot, iters)),
                );
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = admission
}
criterion_main!(benches);
