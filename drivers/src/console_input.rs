//! A task that reads console input and logs it: the guest's console is
//! interactive, and a reader blocked across a suspend must still get what
//! is typed after the resume.

pub fn spawn() {
    kernel::sched::spawn("console-input", || {
        let mut buf = [0u8; 128];
        loop {
            let n = kernel::console::read_blocking(&mut buf);
            let text: alloc::string::String =
                buf[..n].iter().map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' }).collect();
            log::info!("console: read {} bytes: \"{}\"", n, text);
        }
    });
}
