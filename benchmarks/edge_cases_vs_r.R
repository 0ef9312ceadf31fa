# The R side of benchmarks/edge_cases_vs_r.py: edge cases of the model-safety rule
# (docs/model-safety.md) on survival datasets not used by the tests.
#
#     Rscript benchmarks/edge_cases_vs_r.R DIR
#
# Writes the frames (DIR/*.csv) and R's numbers, one per row (DIR/reference.csv: check, key,
# value). Factor levels are sorted as the toolkit sorts them (radix = C locale).
suppressPackageStartupMessages({
  library(survival)
  library(cmprsk)
})
setwd(commandArgs(trailingOnly = TRUE)[[1]])
rows <- list()
add <- function(check, key, value) rows[[length(rows) + 1]] <<- data.frame(check = check, key = key, value = value)
sf <- function(x) factor(x, levels = sort(unique(as.character(x)), method = "radix"))
k <- kidney; k$disease <- sf(k$disease); k$sexf <- sf(ifelse(k$sex==1,"m","f"))
write.csv(data.frame(time=k$time,status=k$status,age=k$age,sexf=as.character(k$sexf),disease=as.character(k$disease)),"kidney.csv",row.names=FALSE)
f <- coxph(Surv(time,status)~age+sexf+disease,k); for (n in names(coef(f))) {add("kidney_cox",n,coef(f)[n]); add("kidney_cox_se",n,sqrt(vcov(f)[n,n]))}
add("kidney_cox_fit","loglik",f$loglik[2]); add("kidney_cox_fit","concordance",concordance(f)$concordance)
z <- cox.zph(f)$table; for (n in rownames(z)) add("kidney_zph",n,z[n,"chisq"])
# no events in a level: disease PKD patients all censored
k2 <- k; k2$status[k2$disease=="PKD"] <- 0
write.csv(data.frame(time=k2$time,status=k2$status,age=k2$age,disease=as.character(k2$disease)),"kidney_noevent.csv",row.names=FALSE)
f <- suppressWarnings(coxph(Surv(time,status)~age+disease,k2)); for (n in names(coef(f))) add("kidney_noevent",n,coef(f)[n])
for (n in names(coef(f))) add("kidney_noevent_se",n,sqrt(vcov(f)[n,n]))
r <- retinopathy; write.csv(data.frame(futime=r$futime,status=r$status,laser=as.character(r$laser),age=r$age,type=as.character(r$type),risk=r$risk),"retino.csv",row.names=FALSE)
r$laser <- sf(r$laser); r$type <- sf(r$type); r$age2 <- 2*r$age
f <- coxph(Surv(futime,status)~laser+age+type+risk+age2,r); for (n in names(coef(f))) add("retino_cox",n,coef(f)[n])
for (n in names(coef(f))) add("retino_cox_se",n,if (is.na(coef(f)[n])) NA else sqrt(vcov(f)[n,n]))
add("retino_cox_fit","concordance",concordance(f)$concordance)
b <- subset(bladder, enum==1); write.csv(data.frame(stop=b$stop,event=b$event,rx=b$rx,number=b$number,size=b$size),"bladder.csv",row.names=FALSE)
f <- coxph(Surv(stop,event)~rx+number+size,b); for (n in names(coef(f))) {add("bladder_cox",n,coef(f)[n]); add("bladder_cox_se",n,sqrt(vcov(f)[n,n]))}
z <- cox.zph(f)$table; for (n in rownames(z)) add("bladder_zph",n,z[n,"chisq"])
p <- subset(pbc, !is.na(trt)); write.csv(data.frame(time=p$time,status=p$status,age=p$age,logbili=log(p$bili),sex=as.character(p$sex)),"pbc.csv",row.names=FALSE)
# separation: marker = 1 for deaths before day 1000
p$marker <- as.integer(p$status==2 & p$time < 1000)
write.csv(data.frame(time=p$time,dead=as.integer(p$status==2),age=p$age,marker=p$marker),"pbc_sep.csv",row.names=FALSE)
f <- suppressWarnings(coxph(Surv(time,status==2)~age+marker,p)); add("pbc_sep","age",coef(f)["age"]); add("pbc_sep","marker",coef(f)["marker"])
cif <- survfit(Surv(time, factor(status))~1, p); s <- summary(cif, times=c(1000,2000,3000), extend=TRUE)
for (j in 2:3) for (t in 1:3) add("pbc_cif", paste(cif$states[j], c(1000,2000,3000)[t]), s$pstate[t,j])
for (j in 2:3) for (t in 1:3) add("pbc_cif_se", paste(cif$states[j], c(1000,2000,3000)[t]), s$std.err[t,j])
cv <- cbind(age=p$age, logbili=log(p$bili))
for (fc in 1:2) {fit <- crr(p$time,p$status,cv,failcode=fc,cencode=0); for (n in 1:2) {add(paste0("pbc_crr",fc),colnames(cv)[n],fit$coef[n]); add(paste0("pbc_crr",fc,"_se"),colnames(cv)[n],sqrt(fit$var[n,n]))}}
q <- subset(p, status!=0); fit <- crr(q$time,q$status,cbind(age=q$age,logbili=log(q$bili)),failcode=2,cencode=0)
add("pbc_crr_nocens","age",fit$coef[1]); add("pbc_crr_nocens","logbili",fit$coef[2])
km <- survfit(Surv(time,status)~sexf,k); add("kidney_km_median","f",summary(km)$table[1,"median"]); add("kidney_km_median","m",summary(km)$table[2,"median"])
for (d in c("weibull","lognormal","loglogistic")) {a <- survreg(Surv(time,status)~age+sexf,k,dist=d); for (n in names(coef(a))) add(paste0("kidney_aft_",d),n,coef(a)[n]); add(paste0("kidney_aft_",d),"Log(scale)",log(a$scale))}
m <- mgus; m$etime <- ifelse(is.na(m$pctime), m$futime, m$pctime); m$ev <- ifelse(is.na(m$pctime), 2*m$death, 1)
write.csv(data.frame(etime=m$etime, ev=m$ev, sex=as.character(m$sex), age=m$age), "mgus.csv", row.names=FALSE)
cif <- survfit(Surv(etime, factor(ev))~sex, m); s <- summary(cif, times=c(2000, 6000), extend=TRUE)
for (i in seq_along(s$time)) add("mgus_cif_by_sex", paste(s$strata[i], s$time[i]), s$pstate[i,2])
k2 <- read.csv("kidney_noevent.csv"); k2$disease <- sf(k2$disease)
a <- survreg(Surv(time,status)~age+disease,k2)
for (n in names(coef(a))) add("kidney_aft_noevent", sub("^disease(.*)$","disease\\1",n), coef(a)[n])
for (n in names(coef(a))) add("kidney_aft_noevent_se", n, sqrt(vcov(a)[n,n]))
# cgd time-varying with a level without events: center "Zurich"? use a constructed level
c <- cgd; c$grp <- as.character(c$treat); ids <- unique(c$id[c$status==0])
nonevent_ids <- setdiff(unique(c$id), unique(c$id[c$status==1]))[1:15]
c$grp[c$id %in% nonevent_ids] <- "zz_none"
c$grp <- sf(c$grp)
write.csv(data.frame(id=c$id,tstart=c$tstart,tstop=c$tstop,status=c$status,age=c$age,grp=as.character(c$grp),hos=as.character(c$hos.cat)),"cgd_noevent.csv",row.names=FALSE)
f <- suppressWarnings(coxph(Surv(tstart,tstop,status)~age+grp,c))
for (n in names(coef(f))) {add("cgd_tv_noevent", n, coef(f)[n]); add("cgd_tv_noevent_se", n, sqrt(vcov(f)[n,n]))}
# colon: strata(sex) + a no-event level, and cluster(id) on kidney with a no-event level
cd <- subset(colon, etype==2 & !is.na(nodes))
colon_data <- data.frame(time=cd$time, status=cd$status, age=cd$age, nodes=cd$nodes, sex=cd$sex, group=as.character(cd$rx), stringsAsFactors=FALSE)
colon_data$group[colon_data$status==0 & colon_data$nodes>=10] <- "none_died"
colon_data$group <- sf(colon_data$group)
write.csv(colon_data, "colon_sex.csv", row.names=FALSE)
f <- suppressWarnings(coxph(Surv(time,status)~age+nodes+group+strata(sex),colon_data))
for (n in names(coef(f))) {add("colon_strata_noevent", n, coef(f)[n]); add("colon_strata_noevent_se", n, sqrt(vcov(f)[n,n]))}
z <- suppressWarnings(cox.zph(coxph(Surv(time,status)~age+nodes+group,colon_data)))$table
for (n in rownames(z)) add("colon_zph", n, z[n,"chisq"])
k <- kidney; k$disease <- sf(k$disease); k$status[k$disease=="PKD"] <- 0
write.csv(data.frame(id=k$id,time=k$time,status=k$status,age=k$age,disease=as.character(k$disease)),"kidney_cluster.csv",row.names=FALSE)
f <- suppressWarnings(coxph(Surv(time,status)~age+disease,k,cluster=id))
for (n in names(coef(f))) add("kidney_cluster_noevent_se", n, sqrt(vcov(f)[n,n]))
# nafld1: a large regular fit
n <- nafld1; write.csv(data.frame(futime=n$futime,status=n$status,age=n$age,male=n$male,bmi=n$bmi),"nafld.csv",row.names=FALSE)
f <- coxph(Surv(futime,status)~age+male+bmi,n)
for (nm in names(coef(f))) {add("nafld_cox", nm, coef(f)[nm]); add("nafld_cox_se", nm, sqrt(vcov(f)[nm,nm]))}
add("nafld_fit","concordance",concordance(f)$concordance)
write.csv(do.call(rbind, rows), "reference.csv", row.names = FALSE)
