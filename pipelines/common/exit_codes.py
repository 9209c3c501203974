"""What a job's exit status means, the same for every job, so a scheduler retries only what a retry can fix.

| status | meaning | retry? |
| --- | --- | --- |
| 0 | everything listed was done | - |
| 1 | some inputs failed (each reported with its file and reason); the rest was done | no: the inputs need a person |
| 2 | the job could not start: bad arguments, model or data not found, settings that contradict earlier runs | no |
| 3 | the job itself failed while running (a cluster, a node or the store went away) | yes |
| 4 | another job is writing the same output folder | later, or not at all |
"""

OK = 0
INPUTS_FAILED = 1
NOT_STARTED = 2
JOB_FAILED = 3
FOLDER_BUSY = 4
