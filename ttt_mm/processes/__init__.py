"""What a process hands the processes it starts: environment variables set for a while
(`environment`); whether a process still runs (`alive`); and SIGTERM taken as Ctrl-C (`termination`)."""
