"""Export and runtimes: the table of formats, their writers, the runtimes that serve an export
folder, the classifier's one scorer, programs lowered for accelerators."""
