"""The exercise service (learnflow.exercise.v1): exercises and quizzes, graded in the sandbox."""
