//! AFL++ entry point of the `web` target (see `guichet_fuzz::web`).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        guichet_fuzz::web(data);
    });
}
