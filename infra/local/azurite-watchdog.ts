/*
 * Preloaded into the Azurite child (`node --import`): when the process that started it goes
 * away without stopping it (killed, crashed), the IPC channel closes and Azurite is asked to
 * stop the way `stop()` asks it, with SIGINT, so it saves its data instead of living on as an
 * orphan holding a port.
 */
process.on('disconnect', () => {
  process.kill(process.pid, 'SIGINT');
});
// The channel is only a signal of the parent's life; it must not keep Azurite running by itself.
process.channel?.unref();
