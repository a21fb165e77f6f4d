use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread exists: espeak-rs reads this from the environment.
    sotto::tts::locate_espeak_data();
    sotto::memory::return_large_blocks_to_the_system();
    match sotto::cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
