//! MariaDB connections the benchmarks share: an administrative connection to
//! the local stack (the benchmarks create and drop their own databases), with
//! errors returned rather than panicking.

use mysql_async::Conn;
use paystream_testkit::Stack;

/// An administrative connection to the local MariaDB over TCP.
pub async fn admin(stack: &Stack) -> anyhow::Result<Conn> {
    Ok(paystream_testkit::cdc::try_admin(stack).await?)
}
