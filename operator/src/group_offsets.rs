//! The committed offsets of any consumer group, read through librdkafka's
//! admin API (`ListConsumerGroupOffsets`, the Kafka OffsetFetch request) on
//! a client the operator already holds. The Rust binding only reads the
//! offsets of the group a consumer was created for, which would cost a new
//! client (threads, connections, ~170 ms) per pipeline per status refresh;
//! this one call on a shared client costs one round trip. It is the only
//! `unsafe` in the workspace: every pointer comes from librdkafka, is
//! checked for null, and is released by a guard on every path (ADR 0008).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char};
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka_sys as sys;

/// Reading a group's offsets failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupOffsetsError {
    /// The group name holds a NUL byte.
    #[error("consumer group name {0:?} is not a C string")]
    Name(String),
    /// No answer within the timeout.
    #[error("no answer to ListConsumerGroupOffsets for {group} within {timeout:?}")]
    Timeout {
        /// The group.
        group: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// Kafka answered with an error.
    #[error("ListConsumerGroupOffsets for {group}: {message}")]
    Kafka {
        /// The group.
        group: String,
        /// librdkafka's message.
        message: String,
    },
}

/// Frees a librdkafka object when dropped.
struct Guard<T> {
    ptr: *mut T,
    free: unsafe extern "C" fn(*mut T),
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: `ptr` came from the librdkafka constructor matching
            // `free`, is non-null, and is freed exactly once, here.
            unsafe { (self.free)(self.ptr) }
        }
    }
}

fn text(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::from("unknown error");
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long
    // as the object they were read from, which outlives this copy.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// The committed offset of every partition `group` has committed, by
/// `(topic, partition)`. A group that never committed has none. Uses
/// `client`'s connections; blocks up to `timeout` (call it from
/// `spawn_blocking`).
pub fn committed<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> Result<HashMap<(String, i32), i64>, GroupOffsetsError> {
    let name = CString::new(group).map_err(|_| GroupOffsetsError::Name(group.into()))?;
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let kafka = |message: String| GroupOffsetsError::Kafka {
        group: group.into(),
        message,
    };
    let rk = client.native_ptr();
    // SAFETY: `rk` is the live handle of `client`, borrowed for this call.
    // Every object created below is owned by a guard declared before the
    // call that may fail, so each is freed once, after its last use.
    unsafe {
        let queue = Guard {
            ptr: sys::rd_kafka_queue_new(rk),
            free: sys::rd_kafka_queue_destroy,
        };
        let options = Guard {
            ptr: sys::rd_kafka_AdminOptions_new(
                rk,
                sys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
            ),
            free: sys::rd_kafka_AdminOptions_destroy,
        };
        let mut request = Guard {
            ptr: sys::rd_kafka_ListConsumerGroupOffsets_new(name.as_ptr(), std::ptr::null()),
            free: sys::rd_kafka_ListConsumerGroupOffsets_destroy,
        };
        if queue.ptr.is_null() || options.ptr.is_null() || request.ptr.is_null() {
            return Err(kafka("librdkafka could not allocate the request".into()));
        }
        let mut errstr = [0 as c_char; 256];
        let err = sys::rd_kafka_AdminOptions_set_request_timeout(
            options.ptr,
            millis,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        if err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(kafka(text(errstr.as_ptr())));
        }
        // The call copies the request; ours is still freed by its guard.
        sys::rd_kafka_ListConsumerGroupOffsets(rk, &mut request.ptr, 1, options.ptr, queue.ptr);
        let event = Guard {
            ptr: sys::rd_kafka_queue_poll(queue.ptr, millis),
            free: sys::rd_kafka_event_destroy,
        };
        if event.ptr.is_null() {
            return Err(GroupOffsetsError::Timeout {
                group: group.into(),
                timeout,
            });
        }
        if sys::rd_kafka_event_error(event.ptr)
            != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            return Err(kafka(text(sys::rd_kafka_event_error_string(event.ptr))));
        }
        let result = sys::rd_kafka_event_ListConsumerGroupOffsets_result(event.ptr);
        if result.is_null() {
            return Err(kafka(
                "the answer is not a ListConsumerGroupOffsets result".into(),
            ));
        }
        let mut count = 0usize;
        let groups = sys::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count);
        let mut out = HashMap::new();
        for i in 0..count {
            let g = *groups.add(i);
            if g.is_null() {
                continue;
            }
            let error = sys::rd_kafka_group_result_error(g);
            if !error.is_null() {
                return Err(kafka(text(sys::rd_kafka_error_string(error))));
            }
            let list = sys::rd_kafka_group_result_partitions(g);
            if list.is_null() {
                continue;
            }
            let len = usize::try_from((*list).cnt).unwrap_or(0);
            for j in 0..len {
                let p = &*(*list).elems.add(j);
                if p.topic.is_null()
                    || p.err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    || p.offset < 0
                {
                    continue;
                }
                out.insert((text(p.topic), p.partition), p.offset);
            }
        }
        Ok(out)
    }
}
