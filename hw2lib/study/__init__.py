"""The study itself: what each task trains and shows (`task_a`, `task_b`, `task_c`), the lever
table, the statistics behind every finding (`stats`), the HW2 report's numbers and the choices made
where it is silent, the figures (`plots`) and each notebook's set-up call (`notebook`).

It may use every layer below (core, data, nets, train); the notebooks call it. It knows nothing of
papermill, the report folder or the command line."""
