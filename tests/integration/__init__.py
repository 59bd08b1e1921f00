"""Components together in one process: real servers on 127.0.0.1, real folders, real stores."""
