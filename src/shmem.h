/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  pgjq's shared memory: requested and attached in one place.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/shmem.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_SHMEM_H
#define PGJQ_SHMEM_H

extern void pgjq_shmem_init(void);
extern bool pgjq_shmem_available(void);

#endif							/* PGJQ_SHMEM_H */
