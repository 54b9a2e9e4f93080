//! Without epoll there is no parking lot: idle connections park in their own tasks.

use std::io;
use std::net::TcpStream as StdTcpStream;
use std::sync::Arc;

use super::budget::{Activity, ConnectionBudget};

pub(super) type Resume = Box<dyn FnOnce(StdTcpStream, Arc<Activity>) + Send>;

pub(super) struct ParkingLot;

impl ParkingLot {
    pub(super) fn new(_: Arc<ConnectionBudget>) -> io::Result<Arc<Self>> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub(super) fn is_open(&self) -> bool {
        false
    }

    pub(super) fn park(&self, _: StdTcpStream, _: Arc<Activity>, _: Resume) {}

    pub(super) async fn run(self: Arc<Self>) {}

    pub(super) fn close(&self) {}
}
