//! A response body that holds its request's admission for as long as it
//! lives.
//!
//! # Invariant kept here
//!
//! The units a request holds are given back exactly when its response is
//! over: when the body ends (just before it reports its end, so a client
//! that sends its next request on seeing the end finds its units free), or
//! when it is dropped unfinished (the client
//! went away, which in 2026-07-28 is the request's cancellation; the
//! connection broke; the server shut down). The units live in the body, so
//! no path that ends a response can skip their release: hyper drops every
//! body it took, finished or not. A listen stream whose place a newer
//! stream of the same client took ends here too: the body reports its end,
//! hyper drops it, and rmcp cancels the handler's `listen` as for a client
//! that went away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::Admitted;

/// The response body of an admitted request (see the module docs).
pub(crate) struct Held<B> {
    inner: B,
    /// Given back when the body ends (before the client can see the end,
    /// so that its next request finds its units free) or is dropped.
    admitted: Option<Admitted>,
    /// For a listen stream: resolves when a newer stream took its place.
    replaced: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    ended: bool,
}

impl<B> Held<B> {
    pub(crate) fn new(inner: B, admitted: Admitted) -> Self {
        let replaced = match &admitted {
            Admitted::Listen(unit) => Some(Box::pin(unit.replaced().clone().cancelled_owned())),
            Admitted::Request(_) => None,
        };
        Self {
            inner,
            admitted: Some(admitted),
            replaced,
            ended: false,
        }
    }
}

impl<B> Held<B> {
    fn end(&mut self) {
        self.ended = true;
        self.admitted = None;
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Held<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(replaced) = &mut this.replaced
            && replaced.as_mut().poll(cx).is_ready()
        {
            this.end();
            return Poll::Ready(None);
        }
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() {
            this.end();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.replaced {
            // It may end early.
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}
