//! MariaDB connections the benchmarks share: an administrative connection to
//! the local stack (the benchmarks create and drop their own databases), with
//! errors returned rather than panicking.

use mysql_async::{Conn, OptsBuilder};
use paystream_testkit::Stack;

/// An administrative connection to the local MariaDB over TCP.
pub async fn admin(stack: &Stack) -> anyhow::Result<Conn> {
    Ok(Conn::new(
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(stack.mysql_port)
            .user(Some(stack.admin.user.clone()))
            .pass(Some(stack.admin.password.clone()))
            .prefer_socket(false),
    )
    .await?)
}
