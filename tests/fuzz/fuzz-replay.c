/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: replays a fuzz corpus as an ordinary test
 *
 * Linked with one fuzz target's LLVMFuzzerTestOneInput(); each argument is a
 * corpus directory or file.  Every input is a TAP case; a crash or a
 * sanitizer report fails it.  The harness runs the cases in children, so the
 * whole corpus is one case here to keep it quick.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint8_t *buf;
	ssize_t k;

	if (fd < 0 || fstat(fd, &st) < 0) {
		printf("# cannot read %s\n", path);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	buf = malloc(st.st_size ? st.st_size : 1);
	if (!buf) {
		close(fd);
		printf("# out of memory for %s\n", path);
		return -1;
	}
	k = read(fd, buf, st.st_size);
	close(fd);
	if (k != st.st_size) {
		free(buf);
		printf("# short read of %s\n", path);
		return -1;
	}
	LLVMFuzzerTestOneInput(buf, st.st_size);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	int n = 0, failed = 0;

	printf("TAP version 13\n");
	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) < 0) {
			printf("not ok %d - %s # missing\n", ++n, argv[i]);
			failed++;
			continue;
		}
		if (S_ISDIR(st.st_mode)) {
			struct dirent **list;
			int k = scandir(argv[i], &list, NULL, alphasort);
			int count = 0;

			for (int j = 0; j < k; j++) {
				char path[4096];

				if (list[j]->d_name[0] != '.') {
					snprintf(path, sizeof(path), "%s/%s", argv[i],
						 list[j]->d_name);
					if (replay_file(path) < 0)
						failed++;
					count++;
				}
				free(list[j]);
			}
			free(list);
			if (count == 0) {
				printf("not ok %d - %s # empty corpus\n", ++n, argv[i]);
				failed++;
				continue;
			}
			printf("ok %d - %s (%d inputs)\n", ++n, argv[i], count);
		} else {
			printf("%sok %d - %s\n", replay_file(argv[i]) < 0 ? "not " : "", ++n,
			       argv[i]);
		}
	}
	printf("1..%d\n", n);
	return failed ? 1 : 0;
}
