// BLAS/LAPACK timing on the shapes Graft uses (LoRA deltas, attention/MLP weights, training's frozen-weight
// products where they stay on BLAS, SVDs of task vectors).
// OpenBLAS: gcc -O2 -I/usr/include/x86_64-linux-gnu/openblas-pthread blas-shapes.c -lopenblas
// BLIS + reference LAPACK: gcc -O2 -I/usr/include/x86_64-linux-gnu/blis-openmp blas-shapes.c \
//   -L/usr/lib/x86_64-linux-gnu/blis-openmp -lblis -llapack   (run with BLIS_NUM_THREADS=2)
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cblas.h>
void sgesdd_(const char*, const int*, const int*, float*, const int*, float*, float*, const int*, float*, const int*, float*, const int*, int*, int*);
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static void gemm(int m,int n,int k,int reps){float*a=malloc(4L*m*k),*b=malloc(4L*k*n),*c=malloc(4L*m*n);for(long i=0;i<(long)m*k;i++)a[i]=rand()/(float)RAND_MAX;for(long i=0;i<(long)k*n;i++)b[i]=rand()/(float)RAND_MAX;
 cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,m,n,k,1,a,k,b,n,0,c,n);double t=now();for(int r=0;r<reps;r++)cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,m,n,k,1,a,k,b,n,0,c,n);t=(now()-t)/reps;
 printf("gemm %dx%dx%d: %.2f ms, %.1f GFLOPS\n",m,n,k,t*1e3,2.0*m*n*k/t/1e9);free(a);free(b);free(c);}
static void svd(int m,int n,int reps){int r=m<n?m:n;float*a=malloc(4L*m*n),*w=malloc(4L*m*n),*s=malloc(4L*r),*u=malloc(4L*m*r),*vt=malloc(4L*r*n);int*iw=malloc(4L*8*r);int info,lw=-1;float q;char j='S';
 for(long i=0;i<(long)m*n;i++)a[i]=rand()/(float)RAND_MAX-0.5f;sgesdd_(&j,&m,&n,w,&m,s,u,&m,vt,&r,&q,&lw,iw,&info);lw=(int)q+1;float*wk=malloc(4L*lw);
 double t=now();for(int k=0;k<reps;k++){for(long i=0;i<(long)m*n;i++)w[i]=a[i];sgesdd_(&j,&m,&n,w,&m,s,u,&m,vt,&r,wk,&lw,iw,&info);}t=(now()-t)/reps;printf("sgesdd %dx%d: %.1f ms (info %d)\n",m,n,t*1e3,info);}
int main(){gemm(576,576,8,200);gemm(576,8,576,200);gemm(1536,576,8,200);gemm(512,576,576,50);gemm(576,576,576,50);
 gemm(512,1536,576,30);gemm(512,576,1536,30);gemm(2048,384,384,30);gemm(2048,1536,384,10);  // SmolLM2 training (B4 T128), MiniLM (B32 T64)
 svd(576,576,5);svd(1536,576,3);svd(576,192,10);return 0;}
