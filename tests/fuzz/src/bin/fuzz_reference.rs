//! AFL++ entry point of the `reference` target (see `guichet_fuzz::reference`).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        guichet_fuzz::reference(data);
    });
}
