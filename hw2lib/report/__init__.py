"""The report: notebook parameters read and checked before anything runs (`params`), every training
a report would run (`plan`), papermill (`run`), nbconvert's page (`page`), the rehearsal's cuts (`rehearsal`), the index page, the folder lock and
the kernel's log.

It may use every layer below it (core, data, nets, train, study); only the `hw2` command and the
GPU doctor sit above it."""
