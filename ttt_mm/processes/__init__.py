"""What a process hands the processes it starts: environment variables set for a while
(`environment`); and whether a process still runs (`alive`)."""
