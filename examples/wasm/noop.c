/* The trivial job: does nothing, so a run measures the executor's overhead. */
int main(void) { return 0; }
