//! An SSE response body that holds its request's [`Ticket`] and ends when
//! the drain ends it. (Other responses are whole when rmcp returns them:
//! the layer drops their ticket then.)
//!
//! A stream the drain ends gets one last event, a `retry:` field (the
//! reconnection delay), after the last whole event the inner body
//! produced: the wrapper only acts between the inner body's frames, and
//! rmcp's SSE bodies yield one whole event per frame.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{RECONNECT_AFTER, Ticket};

/// A response body under the drain (see the module docs).
pub(crate) struct Tracked<B> {
    inner: B,
    ticket: Option<Ticket>,
    /// The drain's signal, registered on the first time the inner body
    /// has nothing to give (a body that never waits never registers).
    end: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Cut by the drain; the `retry:` event still to send.
    Cut,
    Ended,
}

impl<B> Tracked<B> {
    pub(crate) fn new(inner: B, ticket: Ticket) -> Self {
        Self {
            inner,
            ticket: Some(ticket),
            end: None,
            state: State::Open,
        }
    }

    fn cut(&mut self) {
        if let Some(ticket) = &mut self.ticket {
            ticket.cut();
        }
        self.state = State::Cut;
    }

    fn end(&mut self) {
        self.state = State::Ended;
        self.ticket = None;
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            match this.state {
                State::Ended => return Poll::Ready(None),
                State::Cut => {
                    this.end();
                    let event = format!("retry: {}\n\n", RECONNECT_AFTER.as_millis());
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))));
                }
                State::Open => {}
            }
            if this.ticket.as_ref().is_some_and(Ticket::ending) {
                this.cut();
                continue;
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) => {
                    this.end();
                    return Poll::Ready(None);
                }
                Poll::Ready(frame) => return Poll::Ready(frame),
                Poll::Pending => {}
            }
            let Some(ticket) = &this.ticket else {
                return Poll::Pending;
            };
            let end = this
                .end
                .get_or_insert_with(|| Box::pin(ticket.end_signal().clone().cancelled_owned()));
            if end.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.cut();
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Ended || (self.state == State::Open && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        // An SSE stream's length is never known.
        SizeHint::default()
    }
}
