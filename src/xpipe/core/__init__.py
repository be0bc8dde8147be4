"""What anything in xpipe may import: settings, errors by cause, progress bars, resource paths."""
