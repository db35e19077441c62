/* Helpers shared by the example jobs: where the job's files are, and a
 * listing of the inputs in a host-independent order.
 *
 * In the sandbox the inputs are read-only at /inputs and results go to
 * /outputs. Native builds (used by bench/executors.py for comparison) read
 * the two directories from JOB_INPUTS and JOB_OUTPUTS instead. */
#ifndef EXAMPLES_COMMON_H
#define EXAMPLES_COMMON_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PATH_BUF 4096

static const char *inputs_dir(void) {
#ifdef NATIVE
    const char *dir = getenv("JOB_INPUTS");
    if (dir != NULL) return dir;
#endif
    return "/inputs";
}

static const char *outputs_dir(void) {
#ifdef NATIVE
    const char *dir = getenv("JOB_OUTPUTS");
    if (dir != NULL) return dir;
#endif
    return "/outputs";
}

static void die(const char *what, const char *path) {
    fprintf(stderr, "%s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void *xrealloc(void *p, size_t size) {
    p = realloc(p, size);
    if (p == NULL) {
        fprintf(stderr, "out of memory (%zu bytes)\n", size);
        exit(2);
    }
    return p;
}

/* Opens OUTPUTS/name for writing; exits with a message when it cannot. */
static FILE *open_output(const char *name) {
    char path[PATH_BUF];
    snprintf(path, sizeof path, "%s/%s", outputs_dir(), name);
    FILE *f = fopen(path, "w");
    if (f == NULL) die("cannot write", path);
    return f;
}

typedef struct {
    char **items;
    size_t len;
    size_t cap;
} str_list;

static void str_list_push(str_list *list, const char *s) {
    if (list->len == list->cap) {
        list->cap = list->cap ? list->cap * 2 : 16;
        list->items = (char **)xrealloc(list->items, list->cap * sizeof(char *));
    }
    size_t n = strlen(s) + 1;
    list->items[list->len] = (char *)xrealloc(NULL, n);
    memcpy(list->items[list->len], s, n);
    list->len++;
}

static int str_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends every regular file under root/rel to out (paths relative to root),
 * directories depth first, names sorted byte-wise so the order and the
 * result do not depend on the host's directory order. */
static void collect_files(const char *root, const char *rel, str_list *out) {
    char dir_path[PATH_BUF];
    if (rel[0] == '\0') {
        snprintf(dir_path, sizeof dir_path, "%s", root);
    } else {
        snprintf(dir_path, sizeof dir_path, "%s/%s", root, rel);
    }
    DIR *dir = opendir(dir_path);
    if (dir == NULL) die("cannot list", dir_path);
    str_list names = {0};
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        str_list_push(&names, entry->d_name);
    }
    closedir(dir);
    if (names.len) qsort(names.items, names.len, sizeof(char *), str_cmp);
    for (size_t i = 0; i < names.len; i++) {
        char child[PATH_BUF], child_path[PATH_BUF];
        if (rel[0] == '\0') {
            snprintf(child, sizeof child, "%s", names.items[i]);
        } else {
            snprintf(child, sizeof child, "%s/%s", rel, names.items[i]);
        }
        snprintf(child_path, sizeof child_path, "%s/%s", root, child);
        struct stat st;
        if (stat(child_path, &st) != 0) die("cannot stat", child_path);
        if (S_ISDIR(st.st_mode)) {
            collect_files(root, child, out);
        } else if (S_ISREG(st.st_mode)) {
            str_list_push(out, child);
        }
        free(names.items[i]);
    }
    free(names.items);
}

#endif
