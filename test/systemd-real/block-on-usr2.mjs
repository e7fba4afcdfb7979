// Test hook (preloaded with --import through a drop-in): SIGUSR2 blocks the
// event loop for good, as a runaway synchronous loop would.
process.on('SIGUSR2', () => { for (;;); });
