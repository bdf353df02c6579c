//! AFL++ entry point of the `rules` target (see `guichet_fuzz::rules`).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        guichet_fuzz::rules(data);
    });
}
