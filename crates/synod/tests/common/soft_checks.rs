//! Soft checks: a compatibility test keeps going after a mismatch, so that one run
//! lists every difference it finds; `finish_checks` then fails the test with all of
//! them. Each mismatch is also printed at once, so it shows even if the test later
//! panics. The list is per thread: a test's body (its `block_on` future) runs on its
//! own thread.

thread_local! {
    static SOFT_FAILURES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records one mismatch without stopping the test.
pub fn soft_fail(message: String) {
    eprintln!("MISMATCH {message}");
    SOFT_FAILURES.with(|failures| failures.borrow_mut().push(message));
}

/// Fails the test if any soft check failed, listing every mismatch.
pub fn finish_checks() {
    let failures = SOFT_FAILURES.with(|failures| std::mem::take(&mut *failures.borrow_mut()));
    if !failures.is_empty() {
        panic!(
            "{} mismatch(es):\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

/// Like `assert_eq!`, but records the mismatch (see [`soft_fail`]) and goes on.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {
        $crate::check_eq!($left, $right, "values differ")
    };
    ($left:expr, $right:expr, $($arg:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            $crate::common::soft_fail(format!(
                "{}:{}: {}\n  got:  {:?}\n  want: {:?}",
                file!(),
                line!(),
                format!($($arg)+),
                left,
                right
            ));
        }
    }};
}

/// Like `assert!`, but records the failure (see [`soft_fail`]) and goes on.
#[macro_export]
macro_rules! check {
    ($condition:expr, $($arg:tt)+) => {{
        if !$condition {
            $crate::common::soft_fail(format!("{}:{}: {}", file!(), line!(), format!($($arg)+)));
        }
    }};
}

/// Records a mismatch at the caller's line.
#[track_caller]
pub fn mismatch(message: String) {
    let caller = std::panic::Location::caller();
    soft_fail(format!("{}:{}: {message}", caller.file(), caller.line()));
}

/// Unwraps a result that must succeed (a failure stops the test: what follows depends
/// on it).
#[track_caller]
pub fn must<T>(what: &str, result: Result<T, etcd_client::Error>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what}: unexpected error {error}"),
    }
}

/// Checks that `result` is the gRPC error `code` with exactly `message`.
#[track_caller]
pub fn expect_error<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, etcd_client::Error>,
    code: tonic::Code,
    message: &str,
) {
    match result {
        Err(etcd_client::Error::GRpcStatus(status))
            if status.code() == code && status.message() == message => {}
        Err(etcd_client::Error::GRpcStatus(status)) => mismatch(format!(
            "{what}: got status {:?} {:?}, want {code:?} {message:?}",
            status.code(),
            status.message()
        )),
        Err(other) => mismatch(format!(
            "{what}: got error {other}, want {code:?} {message:?}"
        )),
        Ok(value) => mismatch(format!(
            "{what}: succeeded ({}), want {code:?} {message:?}",
            truncate(&format!("{value:?}"))
        )),
    }
}

pub fn truncate(text: &str) -> String {
    if text.len() > 600 {
        format!("{}...", &text[..600])
    } else {
        text.to_string()
    }
}
