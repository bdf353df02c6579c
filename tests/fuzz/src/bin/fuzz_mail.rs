//! AFL++ entry point of the `mail` target (see `guichet_fuzz::mail`).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        guichet_fuzz::mail(data);
    });
}
