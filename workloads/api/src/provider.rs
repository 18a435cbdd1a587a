//! The payment provider stub. paystream has no real payment service provider
//! yet, so a payment is captured at once and its provider reference is a pure
//! function of what was paid: the same purchase, idempotency key and amount
//! always give the same reference, which keeps retries and tests
//! deterministic. A real provider would replace [`capture`] with a call that
//! can also fail or stay pending.

use paystream_core::model::PaymentStatus;
use rust_decimal::Decimal;

/// What the stub provider answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// Always [`PaymentStatus::Succeeded`] for the stub.
    pub status: PaymentStatus,
    /// `stub_<16 hex digits>`.
    pub provider_ref: String,
}

/// Captures `amount` for `purchase_id` under the payment's idempotency key.
pub fn capture(purchase_id: u64, idempotency_key: &str, amount: Decimal) -> Capture {
    // FNV-1a, 64 bit: stable across releases and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(&purchase_id.to_be_bytes());
    eat(idempotency_key.as_bytes());
    eat(amount.normalize().to_string().as_bytes());
    Capture {
        status: PaymentStatus::Succeeded,
        provider_ref: format!("stub_{h:016x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_deterministic_and_distinct() {
        let a = capture(1, "k", Decimal::new(1990, 2));
        assert_eq!(a, capture(1, "k", Decimal::new(19900, 3)), "same amount");
        assert_eq!(a.status, PaymentStatus::Succeeded);
        assert!(a.provider_ref.starts_with("stub_") && a.provider_ref.len() == 21);
        assert_ne!(a, capture(2, "k", Decimal::new(1990, 2)));
        assert_ne!(a, capture(1, "k2", Decimal::new(1990, 2)));
        assert_ne!(a, capture(1, "k", Decimal::new(1991, 2)));
    }
}
